#!/usr/bin/env bash
# Installs Debian packages (as root, or through passwordless sudo); exits non-zero where it cannot.
set -euo pipefail
command -v apt-get >/dev/null || exit 1
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "$@" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$@" >/dev/null 2>&1
}
