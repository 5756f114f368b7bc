#!/usr/bin/env bash
# Installs the system tools auditlog needs when they are missing: Java 17 (Kafka, Flink), Maven
# (jars from Maven Central), Go (interop checks) and PostgreSQL (outbox tests). Debian's packages;
# no-op when all are present.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v go >/dev/null || missing+=(golang-go)
# PostgreSQL server binaries for the outbox tests (Debian keeps them in /usr/lib/postgresql/<v>/bin).
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing missing tools: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
