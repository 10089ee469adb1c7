#!/usr/bin/env bash
# Installs the Debian packages arpc needs to build and test, when run as root; otherwise says
# what to install; and builds the demos' build. Sourced by demo.sh, crash-demo.sh and test.sh.
set -euo pipefail

ARPC_PACKAGES=(build-essential cmake pkg-config libev-dev libck-dev libcmocka-dev python3)
# Optional parts, installed so CI builds and tests them: tls:// (OpenSSL 3), JSON-RPC (jansson)
# and the Go interop test (golang-go).
ARPC_PACKAGES+=(libssl-dev openssl libjansson-dev golang-go)
# The fuzz targets (scripts/fuzz.sh): clang, and libFuzzer's runtime (libclang_rt.fuzzer).
ARPC_PACKAGES+=(clang libclang-rt-dev)
ARPC_PACKAGES+=(libprotobuf-c-dev protobuf-c-compiler) # typed stubs from protobuf-c (ARPC_WITH_PROTOBUF)
ARPC_PACKAGES+=(ninja-build) # test.sh generates once with a multi-config generator (Ninja Multi-Config)

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

# The demos' build: the packages, then a Release build without tests in $BUILD (default: build).
# Arguments go to cmake --build (e.g. --target NAME).
arpc_build_release() {
    arpc_install_deps
    BUILD=${BUILD:-build}
    # The build's own output is hidden: say what the silence is (a first build takes minutes).
    echo "== building arpc (Release, tests off) in $BUILD/" >&2
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DARPC_BUILD_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" "$@" >/dev/null
}
