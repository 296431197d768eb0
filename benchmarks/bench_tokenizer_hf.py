#!/usr/bin/env python3
"""Hugging Face `tokenizers` throughput on a dataset, the peer of
`tensorplug bench --tokenizer` (which runs this script with --vs-hf).

Reads the same texts (a folder of *.jsonl[.gz] files, train* before test*,
or .jsonl[.gz] files), times Tokenizer.encode_batch over all of them
(untruncated, no padding, all cores or --threads), best of --runs, loading
excluded, and the same with encode_batch_fast (no character offsets, where
the installed tokenizers has it), and prints parseable lines:

    hf_tokenizers: reviews=N tokens=N seconds=S tokens_per_s=R
    hf_tokenizers_fast: reviews=N tokens=N seconds=S tokens_per_s=R

When `tokenizers` cannot be imported, the script creates a virtualenv
.venv-bench at the repository root, installs `tokenizers` from PyPI into it
and runs itself again with that interpreter (setup messages go to stderr).
"""
import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv-bench")


def ensure_tokenizers():
    try:
        import tokenizers  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) == os.path.abspath(venv_python):
        sys.exit("bench_tokenizer_hf: `tokenizers` is missing from %s" % VENV)
    if not os.path.exists(venv_python):
        print("bench_tokenizer_hf: creating %s with `tokenizers`" % VENV, file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV], stdout=sys.stderr)
    subprocess.check_call([venv_python, "-m", "pip", "install", "-q", "tokenizers"],
                          stdout=sys.stderr)
    os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])


def data_files(path):
    if not os.path.isdir(path):
        return [path]
    files = sorted(glob.glob(os.path.join(path, "*.jsonl")) + glob.glob(os.path.join(path, "*.jsonl.gz")))
    # train* before test*, the order tp_dataset_load uses
    return sorted(files, key=lambda f: (0 if os.path.basename(f).startswith("train") else
                                        1 if os.path.basename(f).startswith("test") else 2, f))


def read_texts(paths):
    texts = []
    for p in paths:
        for f in data_files(p):
            opener = gzip.open if f.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        texts.append(json.loads(line)["text"])
    return texts


def load_tokenizer(path):
    from tokenizers import Tokenizer
    if path.endswith(".json"):
        return Tokenizer.from_file(path)
    # a vocab.txt: the BERT uncased pipeline, as tokenizer.json describes it
    from tokenizers import BertWordPieceTokenizer
    return BertWordPieceTokenizer(path, lowercase=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json or vocab.txt")
    ap.add_argument("--data", action="append", required=True, help="dataset folder or file")
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.threads > 0:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when the pool starts
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    ensure_tokenizers()
    import tokenizers

    tok = load_tokenizer(args.tokenizer)
    texts = read_texts(args.data)
    methods = [("hf_tokenizers", "encode_batch")]
    if hasattr(tok, "encode_batch_fast"):
        methods.append(("hf_tokenizers_fast", "encode_batch_fast"))
    for label, method in methods:
        fn = getattr(tok, method)
        best, tokens = None, 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            enc = fn(texts)
            sec = time.perf_counter() - t0
            tokens = sum(len(e.ids) for e in enc)
            del enc
            best = sec if best is None else min(best, sec)
        print("%s: reviews=%d tokens=%d seconds=%.4f tokens_per_s=%.0f version=%s"
              % (label, len(texts), tokens, best, tokens / best, tokenizers.__version__), flush=True)


if __name__ == "__main__":
    main()
