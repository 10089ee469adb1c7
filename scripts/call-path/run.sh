#!/usr/bin/env bash
# The path of one pool-handled call through arpc's files: how many files it enters and how
# many calls cross from one file to another. Usage: scripts/call-path/run.sh [SOURCE_TREE]
# (default: this checkout). Builds the library at -O0 with -finstrument-functions (so inlining
# hides nothing), runs trace.c's one call, and resolves every entry with addr2line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/../..}" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The library without its optional parts (JSON-RPC, protobuf-c, TLS: the path uses none of
# them), as CMake builds it without their packages: tls_absent.c in place of the tls_*.c.
srcs=$(cd "$src" && { ls base/*.c async/*.c core/*.c transport/*.c 2>/dev/null |
    grep -vE '^core/(jsonrpc|protobuf)_|^transport/tls_'; ls transport/tls_absent.c 2>/dev/null; } || true)
(cd "$src" && cc -std=gnu11 -O0 -g -no-pie -finstrument-functions -I. -Iinclude $srcs \
    "$here/trace.c" -o "$out/trace" -lev -lck -lpthread)
"$out/trace" > "$out/trace.txt"
# Resolve each function and call site to its source file (relative to the tree).
awk '{print $1; print $2}' "$out/trace.txt" | addr2line -f -e "$out/trace" > "$out/resolved.txt"
python3 - "$out/trace.txt" "$out/resolved.txt" "$src" <<'PY'
import sys, os
trace = [l.split() for l in open(sys.argv[1])]
res = [l.rstrip('\n') for l in open(sys.argv[2])]
src = sys.argv[3]
def loc(i):
    name, where = res[2 * i], res[2 * i + 1]
    f = where.rsplit(':', 1)[0]
    return name, os.path.relpath(f, src) if f.startswith(src) else f
from collections import Counter
# The ground floor (allocator, clock, refcount, ...) is called from everywhere and read once:
# the second count leaves calls into it out.
ground = ('base/', 'core/alloc.c', 'core/error.c')
files, hops, calls, edges, upper_hops = set(), 0, 0, Counter(), 0
for k in range(len(trace)):
    fn_name, fn_file = loc(2 * k)
    _, site_file = loc(2 * k + 1)
    if fn_file.startswith(('base/', 'async/', 'core/', 'transport/')):
        calls += 1
        files.add(fn_file)
        if site_file != fn_file:
            hops += 1
            upper_hops += not fn_file.startswith(ground)
            edges[(site_file, fn_file + ':' + fn_name)] += 1
print("functions entered:", calls)
print("files entered:", len(files), "(.c files: %d)" % len([f for f in files if f.endswith('.c')]))
print("file-to-file calls:", hops)
print("file-to-file calls, not counting calls into the ground floor:", upper_hops)
for f in sorted(files):
    print("  ", f)
if os.environ.get('CALL_PATH_EDGES'):
    for (a, b), n in edges.most_common():
        print("%4d  %s -> %s" % (n, a, b))
PY
