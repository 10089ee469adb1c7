#!/usr/bin/env bash
# Installs the Debian packages arpc needs to build and test, when run as root; otherwise says
# what to install; and builds the demos' build. Sourced by demo.sh, crash-demo.sh and test.sh.
set -euo pipefail

# What a build of the library, its tools and examples needs (tests off: no cmocka), and
# python3, which the crash demo reads its JSON with.
ARPC_BUILD_PACKAGES=(build-essential cmake pkg-config libev-dev libck-dev python3)
# Optional parts, each built when its packages are there: tls:// (OpenSSL 3), JSON-RPC
# (jansson), typed stubs from protobuf-c (ARPC_WITH_PROTOBUF). The demo skips what is missing.
ARPC_OPTIONAL_PACKAGES=(libssl-dev openssl libjansson-dev libprotobuf-c-dev protobuf-c-compiler)
# The whole test suite: the above, cmocka, the Go interop test (golang-go) and the fuzz
# targets (scripts/fuzz.sh: clang, and libFuzzer's runtime, libclang_rt.fuzzer).
ARPC_PACKAGES=("${ARPC_BUILD_PACKAGES[@]}" "${ARPC_OPTIONAL_PACKAGES[@]}" libcmocka-dev golang-go clang libclang-rt-dev)
ARPC_PACKAGES+=(ninja-build) # test.sh generates once with a multi-config generator (Ninja Multi-Config)

# The packages among the arguments (default: ARPC_PACKAGES) that are not installed.
arpc_missing_packages() {
    local missing=() p
    [ $# -gt 0 ] || set -- "${ARPC_PACKAGES[@]}"
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    echo "${missing[@]:-}"
}

arpc_apt_install() { # packages...
    echo "== installing: $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Everything the test suite needs (scripts/test.sh, abuse.sh): installed as root, else named
# and the script stops.
arpc_install_deps() {
    local missing
    missing=$(arpc_missing_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        # shellcheck disable=SC2086
        arpc_apt_install $missing
    else
        echo "arpc needs these Debian packages: $missing" >&2
        echo "install them with:  sudo apt-get install $missing" >&2
        exit 1
    fi
}

# What the demos need: the build's packages, and the optional parts' (installed as root; else
# named, and the demos go on without those parts). The test suite's own tools are not needed.
arpc_install_build_deps() {
    local missing optional
    missing=$(arpc_missing_packages "${ARPC_BUILD_PACKAGES[@]}")
    optional=$(arpc_missing_packages "${ARPC_OPTIONAL_PACKAGES[@]}")
    [ -z "$missing$optional" ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        # shellcheck disable=SC2086
        arpc_apt_install $missing $optional
        return 0
    fi
    if [ -n "$optional" ]; then
        echo "arpc builds without the optional parts these Debian packages bring (tls://, JSON-RPC," >&2
        echo "protobuf-c; the demo skips them): $optional" >&2
        echo "install them with:  sudo apt-get install $optional" >&2
    fi
    if [ -n "$missing" ]; then
        echo "arpc needs these Debian packages: $missing" >&2
        echo "install them with:  sudo apt-get install $missing" >&2
        exit 1
    fi
}

# The demos' build: the packages, then a Release build without tests in $BUILD (default: build).
# Arguments go to cmake --build (e.g. --target NAME).
# A script this one runs (demo.sh runs crash-demo.sh) finds the whole build made already.
arpc_build_release() {
    BUILD=${BUILD:-build}
    [ "${ARPC_RELEASE_BUILT:-}" = "$BUILD" ] && return 0
    arpc_install_build_deps
    # The build's own output is hidden: say what the silence is (a first build takes minutes).
    echo "== building arpc (Release, tests off) in $BUILD/" >&2
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DARPC_BUILD_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" "$@" >/dev/null
    [ $# -eq 0 ] && export ARPC_RELEASE_BUILT=$BUILD
    return 0
}
