#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, as root or through sudo.
# socat makes the pseudo-terminal pairs of the serial transport tests.
# swtpm (and swtpm_setup from swtpm-tools) is the software TPM the TPM tests run against.
set -euo pipefail
PACKAGES=(socat swtpm swtpm-tools)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
  echo "need root or sudo to install: ${missing[*]}" >&2; exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
