#!/bin/sh
# tests/reference/make_mpnet_fixtures.sh — (re)makes the committed MPNet
# fixtures of tests/test_models.c in tests/data/mpnet/, one folder each, with
# Hugging Face's MPNetForSequenceClassification (tests/reference/mpnet_reference.py).
# transformers is not packaged in Debian, so CI cannot run this; the folders
# are committed. Needs .venv-hf (benchmarks/hf_venv.sh makes it: Debian's
# torch 1.13 + transformers 4.46.3 from PyPI). Deterministic: the same
# versions give the same bytes.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
py=$("$here/benchmarks/hf_venv.sh")
out="$here/tests/data/mpnet"
make() { # name, options
  name=$1; shift
  rm -rf "${out:?}/$name"
  "$py" "$here/tests/reference/mpnet_reference.py" "$@" --out "$out/$name"
  chmod 644 "$out/$name"/*
}
make default
make hidden24-heads3-table40 --hidden 24 --heads 3 --ffn 40 --layers 3 --buckets 40 --seed 1
make batch1 --batch 1 --seq 9 --seed 2
make seqlen1 --batch 2 --seq 1 --seed 3
make mostly-padding --batch 7 --seq 23 --seed 4
make long-seq300 --batch 2 --seq 300 --layers 1 --seed 5
make keys-without-prefix --keys-without-prefix --seed 6
make pad-inside --pad-inside --seed 7
du -sh "$out"
