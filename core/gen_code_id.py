#!/usr/bin/env python3
"""Writes a C header defining NAME as the SHA-256 of the given source files.

The token cache is keyed by the tokenizer's own source (core/meson.build), so
that a change to the tokenizer's code never reads ids an older build wrote."""
import hashlib
import sys

out, name, *sources = sys.argv[1:]
h = hashlib.sha256()
for path in sources:
    with open(path, "rb") as f:
        h.update(f.read())
with open(out, "w") as f:
    f.write(f'#define {name} "{h.hexdigest()}"\n')
