#!/usr/bin/env bash
# Installs the Debian packages arpc needs to build and test, when run as root; otherwise says
# what to install. Sourced by demo.sh and test.sh.
set -euo pipefail

ARPC_PACKAGES=(build-essential cmake pkg-config libev-dev libck-dev libcmocka-dev python3)

arpc_missing_packages() {
    local missing=()
    for p in "${ARPC_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    echo "${missing[@]:-}"
}

arpc_install_deps() {
    local missing
    missing=$(arpc_missing_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "== installing: $missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >&2
    else
        echo "arpc needs these Debian packages: $missing" >&2
        echo "install them with:  sudo apt-get install $missing" >&2
        exit 1
    fi
}
