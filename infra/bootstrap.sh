#!/usr/bin/env bash
# Installs the system tools auditlog needs when they are missing: Java 17 (Kafka, Flink), Maven
# (jars from Maven Central) and Go (interop checks). Debian's packages; no-op when all are present.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v go >/dev/null || missing+=(golang-go)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing missing tools: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
