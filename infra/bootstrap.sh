#!/usr/bin/env bash
# Installs the system tools auditlog needs when they are missing: Java 17 with javac (Kafka, Flink,
# the ingest job's operators in pipelines/jvm), Maven
# (jars from Maven Central), Go (interop checks), PostgreSQL (outbox and key-store tests, `stack up
# postgres`), Chromium and Node.js
# (Compliance UI browser tests). Debian's packages; no-op when all are present.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v go >/dev/null || missing+=(golang-go)
# ssh-agent, ssh-add and ssh-keygen hold and make the local witness's key (infra/witness.py).
command -v ssh-agent >/dev/null && command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# PostgreSQL server binaries for the outbox tests (Debian keeps them in /usr/lib/postgresql/<v>/bin).
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# Headless Chromium and Node.js with npm for the Compliance UI's browser tests (tests/browser:
# playwright-core drives Debian's chromium and never downloads a browser of its own).
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing missing tools: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
