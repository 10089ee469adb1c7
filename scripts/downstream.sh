#!/usr/bin/env bash
# A distribution's view of arpc: configure for /usr with the machine's multiarch libdir
# (lib/x86_64-linux-gnu), stage `cmake --install` under DESTDIR, then build tests/downstream
# against the staged tree with find_package(arpc 0.2) and with pkg-config, each with the shared
# and the static library, and run the four programs and a C++ one (with protobuf-c, typed stubs through the installed
# arpc_protobuf_generate; with jansson, the JSON-RPC client, shared and static). Prints "downstream: N programs ok".
# BUILD (default build-downstream) holds both builds; the staged tree is a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-downstream}
tuple=$(gcc -print-multiarch 2>/dev/null || true)
libdir=lib${tuple:+/$tuple}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# As a packager builds it: the library and arpc-call, no tests, examples or benchmark.
cmake -S . -B "$BUILD/arpc" -DCMAKE_BUILD_TYPE=Release -DARPC_BUILD_TESTS=OFF -DARPC_BUILD_EXAMPLES=OFF \
    -DARPC_BUILD_BENCH=OFF -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR="$libdir" >/dev/null
cmake --build "$BUILD/arpc" -j"${JOBS:-2}" >/dev/null
DESTDIR=$stage cmake --install "$BUILD/arpc" >/dev/null

fail() { echo "downstream: $*" >&2; exit 1; }
usr=$stage/usr
for f in "$libdir/libarpc.a" "$libdir/pkgconfig/arpc.pc" "$libdir/cmake/arpc/arpcConfigVersion.cmake" \
         include/arpc/version.h include/arpc/stats.h bin/arpc-call share/doc/arpc/README.md \
         share/doc/arpc/SEMANTICS.md; do
    [ -e "$usr/$f" ] || fail "the staged install has no /usr/$f"
done
grep -qx "libdir=\${prefix}/$libdir" "$usr/$libdir/pkgconfig/arpc.pc" || fail "arpc.pc's libdir is not \${prefix}/$libdir"
# libarpc.a's global symbols are the shared library's exports, nothing more (cmake/static_prelink.cmake).
static_syms=$(nm -g --defined-only "$usr/$libdir/libarpc.a" | awk 'NF == 3 {print $3}' | sort)
shared_syms=$(nm -D --defined-only "$usr/$libdir/libarpc.so" | awk 'NF == 3 {print $3}' | sort)
[ "$static_syms" = "$shared_syms" ] || fail "libarpc.a's global symbols are not libarpc.so's exports: $(comm -23 \
    <(echo "$static_syms") <(echo "$shared_syms") | head -5 | tr '\n' ' ')"

grep -qx "prefix=\${pcfiledir}/$(echo "$libdir/pkgconfig" | sed 's|[^/]*|..|g')" "$usr/$libdir/pkgconfig/arpc.pc" ||
    fail "arpc.pc's prefix is not found from its own place"
# pkg-config reads the staged arpc.pc, whose prefix follows it (${pcfiledir}); CMake finds
# arpcConfig.cmake under the staged prefix.
export PKG_CONFIG_PATH=$usr/$libdir/pkgconfig
rm -rf "$BUILD/downstream" # its cache remembers the previous (deleted) stage
cmake -S tests/downstream -B "$BUILD/downstream" -DCMAKE_PREFIX_PATH="$usr" >/dev/null
cmake --build "$BUILD/downstream" -j"${JOBS:-2}" >/dev/null

# 0.x: the soname carries the minor (docs/ABI.md).
soname=libarpc.so.$(sed -n 's/^#define ARPC_VERSION_MAJOR \([0-9]*\)$/\1/p' include/arpc/version.h).$(sed -n 's/^#define ARPC_VERSION_MINOR \([0-9]*\)$/\1/p' include/arpc/version.h)
n=0
for prog in downstream_cmake downstream_pc downstream_cmake_static downstream_pc_static downstream_cxx; do
    bin=$BUILD/downstream/$prog
    # The shared builds must load the staged libarpc.so.MAJOR.MINOR, the static ones no libarpc at all.
    needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(libarpc[^]]*\)\]/\1/p')
    case $prog in
        *_static) [ -z "$needed" ] || fail "$prog needs $needed, but was linked statically" ;;
        *) [ "$needed" = "$soname" ] || fail "$prog needs '${needed}', not $soname" ;;
    esac
    LD_LIBRARY_PATH=$usr/$libdir "$bin" >/dev/null || fail "$prog failed"
    n=$((n + 1))
done
# Typed stubs through the installed arpc_protobuf_generate(), when arpc was built with protobuf-c.
if [ -e "$BUILD/downstream/downstream_proto" ]; then
    LD_LIBRARY_PATH=$usr/$libdir "$BUILD/downstream/downstream_proto" >/dev/null || fail "downstream_proto failed"
    n=$((n + 1))
fi
# The JSON-RPC client, when arpc was built with jansson (arpc_WITH_JSONRPC), shared and static.
for prog in downstream_jsonrpc downstream_jsonrpc_static; do
    if [ -e "$BUILD/downstream/$prog" ]; then
        LD_LIBRARY_PATH=$usr/$libdir "$BUILD/downstream/$prog" >/dev/null || fail "$prog failed"
        n=$((n + 1))
    fi
done
# arpc-call is installed with the library and carries it (linked with its objects): it runs as staged.
"$usr/bin/arpc-call" --help >/dev/null || fail "the staged arpc-call does not run"
echo "downstream: $n programs ok (find_package and pkg-config, shared and static, C and C++, /usr/$libdir staged)"
