#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: Debian packages (when root), a venv, the package.
# A second run installs nothing: it checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc, pkg-config, libgnutls28-dev: the native QUIC preload library and the C test programs (lxin/quic's
# libquic and func_test need GnuTLS); cppcheck: `make lint` on the C code.
DEB_PACKAGES=(tshark libsocket-wrapper libnss-wrapper samba smbclient samba-testsuite ngtcp2-client ngtcp2-server
              gcc libc6-dev make pkg-config libgnutls28-dev cppcheck)
PYTHON=${PYTHON:-python3}

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: WARNING: missing Debian packages (${missing[*]}); run as root or install them:" >&2
        echo "  sudo apt-get install ${missing[*]}" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.wirecheck-installed
want=$(cat pyproject.toml setup.py wrappers/_csum.c | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing wirecheck and its test extras into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

# The native QUIC preload library (native/), with the system compiler: make rebuilds only what changed.
if command -v gcc >/dev/null && command -v make >/dev/null; then
    make -s -C native >/dev/null
else
    echo "setup: WARNING: no gcc/make: native programs get no IPPROTO_QUIC (native/ is not built)" >&2
fi
