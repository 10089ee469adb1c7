#!/usr/bin/env python3
"""Keeps docs/TUTORIAL.md true to the programs it quotes (examples/tutorial/).

  tutorial_check.py snippets TUTORIAL.md DIR
      every ```c block of the tutorial appears, verbatim, in one of DIR's .c and .h files.
  tutorial_check.py run TUTORIAL.md NAME PROGRAM [ARGS...]
      runs PROGRAM, which must exit 0, and finds in its standard output, in order, every line of
      the tutorial's output blocks marked <!-- output: NAME --> (the line before the fence);
      "..." in such a line stands for any text (an address, a port).
"""
import os
import re
import subprocess
import sys


def blocks(text, lang):
    """(line number, marker or None, body) of each ```lang block."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```" + lang:
            marker = lines[i - 1].strip() if i > 0 else ""
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start, marker, "\n".join(body) + "\n"))
        i += 1
    return out


def snippets(tutorial, srcdir):
    sources = {}
    for name in sorted(os.listdir(srcdir)):
        if name.endswith((".c", ".h")):
            with open(os.path.join(srcdir, name)) as f:
                sources[name] = f.read()
    found = blocks(open(tutorial).read(), "c")
    bad = [(line, body) for line, _, body in found if not any(body in s for s in sources.values())]
    for line, body in bad:
        print(f"{tutorial}:{line}: this ```c block is in none of {srcdir}'s files:\n{body}")
    print(f"{len(found)} C blocks, {len(found) - len(bad)} found verbatim in {srcdir}")
    return 1 if bad or not found else 0


def run(tutorial, name, argv):
    want = []
    for _, marker, body in blocks(open(tutorial).read(), "text"):
        if marker == f"<!-- output: {name} -->":
            want += [l for l in body.split("\n") if l.strip()]
    if not want:
        print(f"no output block of {name} in {tutorial}")
        return 1
    proc = subprocess.run(argv, stdout=subprocess.PIPE, universal_newlines=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(f"{argv[0]} exited {proc.returncode}")
        return 1
    got, at = proc.stdout.split("\n"), 0
    for line in want:
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("...")) + "$")
        while at < len(got) and not pattern.match(got[at]):
            at += 1
        if at == len(got):
            print(f"the tutorial shows, and the program did not print (in this order): {line}")
            return 1
        at += 1
    print(f"{len(want)} lines of the tutorial's output found")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "snippets":
        sys.exit(snippets(sys.argv[2], sys.argv[3]))
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], sys.argv[3], sys.argv[4:]))
    sys.exit(__doc__)
