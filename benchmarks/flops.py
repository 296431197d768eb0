#!/usr/bin/env python3
"""benchmarks/flops.py — how much of a training speed-up is arithmetic.

For the training steps of a tensorplug run (its split, recorded in
RUN/split/train.txt, in the epoch order both frameworks use), counts the
multiply-adds of the matrix products of one epoch twice:
  * as the peer computes them (HF Transformers: every layer over the padded
    batch [B, T], attention over all T keys);
  * as tensorplug computes them: the last layer's queries, attention output
    and feed-forward for the [CLS] row only (keys and values over every
    token), the position-wise layers over the real tokens only when a batch
    is under 90% full (packing, TP_PACK_MAX_FILL) and the run has no dropout
    (--no-dropout: training with dropout does not pack), attention over the
    keys up to each entry's last real token.
Forward + backward = 3x the forward products (dW and dX each as large as the
forward one). The ratio peer / tensorplug is the speed-up the arithmetic
alone gives; a measured ratio above it is engine.

    .venv-hf/bin/python benchmarks/flops.py --run runs/compare/NAME/tensorplug-1 --out R.json

With --eval IDS (a file of record ids in evaluation order, as `tensorplug eval
--ids-out` writes them) and --model DIR, it counts one evaluation instead:
forward only, batches of --batch reviews sorted by length (as both
`tensorplug eval` and benchmarks/ort_eval.py take them), the peer over every
layer of the padded batch (ONNX Runtime, HF), tensorplug as above with
packing (evaluation has no dropout).

    .venv-hf/bin/python benchmarks/flops.py --eval runs/compare/NAME/ids-1.txt \
        --model MODEL_DIR --max-len 256 --batch 64 --out R.json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_finetune import default_data, epoch_order, load_records, read_ids  # noqa: E402

PACK_MAX_FILL = 0.9


def layer_flops(rows, rows_q, H, F, keys_per_query_sum):
    """Forward multiply-adds x2 of one encoder layer.
    rows: rows of K, V; rows_q: rows of Q, output, FFN; keys_per_query_sum:
    sum over query rows of the keys each attends to (times head_dim * heads = H)."""
    proj = 2 * rows * H * H + 2 * rows_q * H * H     # K, V; Q, O
    ffn = 2 * rows_q * H * F * 2                      # up and down
    attn = 2 * keys_per_query_sum * H * 2             # QK^T and PV
    return proj + ffn + attn


def ours_batch(ls, L, H, F, pack_allowed):
    """tensorplug's forward multiply-adds x2 of one batch of entry lengths ls,
    and whether it packs."""
    B, T, n = len(ls), max(ls), sum(ls)
    pack = pack_allowed and n <= PACK_MAX_FILL * B * T
    rows = n if pack else B * T
    keys = sum(T * l for l in ls)  # every query row of the entry, its live keys
    return ((L - 1) * layer_flops(rows, rows, H, F, keys)
            + layer_flops(rows, B, H, F, sum(ls)), pack)  # last layer: [CLS] queries only


def eval_flops(a):
    from transformers import AutoTokenizer
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    L = cfg.get("num_hidden_layers", cfg.get("n_layers"))
    H = cfg.get("hidden_size", cfg.get("dim"))
    F = cfg.get("intermediate_size", cfg.get("hidden_dim"))
    tok = AutoTokenizer.from_pretrained(a.model)
    recs = load_records(a.data or [default_data()])
    ids = read_ids(a.eval)
    lens = [len(x) for x in tok([recs[i][0] for i in ids], truncation=True,
                                max_length=a.max_len)["input_ids"]]
    order = sorted(range(len(ids)), key=lambda k: (lens[k], k))
    peer = ours = 0.0
    packed = 0
    for s in range(0, len(order), a.batch):
        ls = [lens[k] for k in order[s:s + a.batch]]
        full = len(ls) * max(ls)
        peer += L * layer_flops(full, full, H, F, full * max(ls))
        f, p = ours_batch(ls, L, H, F, True)
        ours += f
        packed += p
    batches = (len(ids) + a.batch - 1) // a.batch
    res = {"eval_ids": a.eval, "model": a.model, "reviews": len(ids), "layers": L, "hidden": H,
           "ffn": F, "max_len": a.max_len, "batch": a.batch, "batches": batches,
           "packed_batches": packed, "real_tokens": sum(lens), "peer_flops": peer,
           "tensorplug_flops": ours, "arithmetic_speedup": peer / ours}
    print(f"{a.eval}: peer {peer / 1e12:.2f} TFLOP, tensorplug {ours / 1e12:.2f} TFLOP "
          f"({packed} of {batches} batches packed): arithmetic alone {peer / ours:.2f}x")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a tensorplug run folder (results.json, split/)")
    ap.add_argument("--eval", help="record ids in evaluation order (tensorplug eval --ids-out)")
    ap.add_argument("--model", help="with --eval: the model folder (config.json, tokenizer)")
    ap.add_argument("--max-len", type=int, default=256, help="with --eval [256]")
    ap.add_argument("--batch", type=int, default=64, help="with --eval [64]")
    ap.add_argument("--data", action="append")
    ap.add_argument("--out")
    ap.add_argument("--no-dropout", dest="dropout", action="store_false",
                    help="the run trained without dropout (then batches under 90%% full pack)")
    a = ap.parse_args()
    if a.eval:
        if not a.model:
            ap.error("--eval needs --model")
        res = eval_flops(a)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(res, f, indent=2)
        return
    if not a.run:
        ap.error("give --run (training) or --eval (evaluation)")
    from transformers import AutoTokenizer

    with open(os.path.join(a.run, "results.json")) as f:
        r = json.load(f)
    c, m = r["config"], r["model"]
    L, H, F = m["layers"], m["hidden"], m["ffn"]
    vocab = m["vocab"]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(vocab))
    recs = load_records(a.data or [default_data()])
    train = read_ids(os.path.join(a.run, "split", "train.txt"))
    lens = dict(zip(train, (len(x) for x in tok([recs[i][0] for i in train], truncation=True,
                                                  max_length=c["max_len"])["input_ids"])))
    peer = ours = 0.0
    packed_batches = 0
    for e in range(1, c["epochs"] + 1):
        order = epoch_order(train, c["seed"], e)
        for s in range(0, len(order), c["batch"]):
            ls = [lens[i] for i in order[s:s + c["batch"]]]
            full = len(ls) * max(ls)
            peer += L * layer_flops(full, full, H, F, full * max(ls))
            # training with dropout does not pack (docs/architecture.md): the
            # packed rows would draw other dropout counters than padded ones
            f, pack = ours_batch(ls, L, H, F, not a.dropout)
            ours += f
            packed_batches += pack
    res = {"run": a.run, "layers": L, "hidden": H, "ffn": F, "max_len": c["max_len"],
           "batch": c["batch"], "steps": (len(train) + c["batch"] - 1) // c["batch"] * c["epochs"],
           "packed_steps": packed_batches, "peer_train_flops": 3 * peer, "tensorplug_train_flops": 3 * ours,
           "arithmetic_speedup": peer / ours}
    print(f"{a.run}: peer {3 * peer / 1e12:.2f} TFLOP, tensorplug {3 * ours / 1e12:.2f} TFLOP per epoch "
          f"({packed_batches} of {res['steps']} steps packed): arithmetic alone {peer / ours:.2f}x")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
