#!/usr/bin/env python3
"""The peer of `tensorplug train`: the same fine-tune with Hugging Face
Transformers + PyTorch, on the split a tensorplug run recorded.

    .venv-hf/bin/python benchmarks/hf_finetune.py --model models/all-MiniLM-L6-v2 \
        --run runs/recipe-a-tensorplug --max-len 128 --batch 32 --lr 5e-5 --epochs 1 \
        --seed 42 --threads 2 --out runs/recipe-a-hf/results.json

What is the same as tensorplug's `train`:
  * the split: RUN/split/{train,val,test}.txt (record ids, the `id` field of the
    IMDB JSONL records under --data), read in the recorded order;
  * the per-epoch shuffle: tensorplug's seeded splitmix64 Fisher-Yates
    (core/train.c epoch_order) is reproduced exactly, so every step sees the
    same reviews as tensorplug's step;
  * tokenization: BertTokenizerFast from the model folder (tensorplug's tokenizer
    gives identical ids), [CLS] ... [SEP], truncation to --max-len, padding to
    the longest sequence of each batch (dynamic padding), token_type_ids 0;
  * the model: BertForSequenceClassification.from_pretrained(DIR, num_labels=2),
    classifier N(0, 0.02) under a fixed torch seed; dropout 0.1 everywhere (HF's
    config defaults, which are tensorplug's);
  * the optimiser: Adam, betas (0.9, 0.999), eps 1e-7, constant learning rate,
    no weight decay, no clipping; loss: mean cross-entropy from logits.
    Keras (and tensorplug's `--optimizer adam`) adds eps to sqrt(v) before the
    bias correction, PyTorch to sqrt(v_hat) after it: Keras' eps equals a
    PyTorch eps of eps / sqrt(1 - beta2^t), 3.2e-6 at step 1 falling to 1e-7.
    --keras-eps sets that per-step value and matches Keras exactly;
  * evaluation: validation loss/accuracy after each epoch, early stopping on
    validation loss with --patience and restore-best, then test accuracy, F1 of
    label 1, confusion matrix [[tn, fp], [fn, tp]];
  * the throughput numbers: real (non-padding) tokens of the training steps per
    second of the training loop (validation excluded) and ms per step, as in
    tensorplug's results.json; `torch.set_num_threads(--threads)`.
What differs: dropout masks (different RNGs), float summation order.
"""
import argparse
import copy
import glob
import gzip
import json
import os
import sys
import time

T_START = time.time()
M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def epoch_order(train, seed, epoch):
    """core/train.c epoch_order(): the order of epoch `epoch` (1-based)."""
    out = list(train)
    st = (seed * 0x100000001B3 + epoch) & M64
    for i in range(len(out), 1, -1):
        st, r = splitmix64(st)
        j = r % i
        out[i - 1], out[j] = out[j], out[i - 1]
    return out


def load_records(paths):
    recs = {}
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.jsonl.gz")) + glob.glob(os.path.join(p, "*.jsonl")))
        else:
            files.append(p)
    for fn in files:
        op = gzip.open if fn.endswith(".gz") else open
        with op(fn, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                recs[r["id"]] = (r["text"], int(r["label"]))
    return recs


def read_split(run, name):
    with open(os.path.join(run, "split", name + ".txt"), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, vocab)")
    ap.add_argument("--run", required=True, help="a tensorplug run folder holding split/{train,val,test}.txt")
    ap.add_argument("--data", action="append", help="dataset folder or files [/work/shared/data/imdb]")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--eps", type=float, default=1e-7)
    ap.add_argument("--keras-eps", action="store_true", help="per-step eps equal to Keras' placement")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps (smoke tests)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="train only (with --max-steps: a speed probe); no validation or test")
    ap.add_argument("--out", help="results JSON path")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import BertForSequenceClassification, BertTokenizerFast

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    data = a.data or ["/work/shared/data/imdb"]

    recs = load_records(data)
    split = {k: read_split(a.run, k) for k in ("train", "val", "test")}
    missing = [i for k in split for i in split[k] if i not in recs]
    if missing:
        sys.exit(f"hf_finetune: {len(missing)} ids of {a.run}/split are not in {data} (first: {missing[0]})")
    print(f"Data: split from {a.run}: train {len(split['train'])} / val {len(split['val'])} / "
          f"test {len(split['test'])}", flush=True)

    tok = BertTokenizerFast.from_pretrained(a.model)
    t0 = time.time()
    ids = {}
    all_ids = split["train"] + split["val"] + split["test"]
    enc = tok([recs[i][0] for i in all_ids], truncation=True, max_length=a.max_len)["input_ids"]
    for i, e in zip(all_ids, enc):
        ids[i] = e
    t_tok = time.time() - t0
    print(f"Tokenized {len(all_ids)} texts (max length {a.max_len}) in {t_tok:.1f} s", flush=True)

    torch.manual_seed(a.seed)
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
    pad = tok.pad_token_id

    def make_batch(bids):
        L = max(len(ids[i]) for i in bids)
        x = torch.full((len(bids), L), pad, dtype=torch.long)
        m = torch.zeros((len(bids), L), dtype=torch.long)
        for r, i in enumerate(bids):
            s = ids[i]
            x[r, :len(s)] = torch.tensor(s)
            m[r, :len(s)] = 1
        y = torch.tensor([recs[i][1] for i in bids], dtype=torch.long)
        return x, m, y

    def evaluate(id_list):
        model.eval()
        loss_sum, conf = 0.0, [[0, 0], [0, 0]]
        t = time.time()
        with torch.no_grad():
            for s in range(0, len(id_list), a.eval_batch):
                x, m, y = make_batch(id_list[s:s + a.eval_batch])
                logits = model(input_ids=x, attention_mask=m).logits
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                for yt, yp in zip(y.tolist(), logits.argmax(-1).tolist()):
                    conf[yt][yp] += 1
        n = len(id_list)
        tp, fp, fn = conf[1][1], conf[0][1], conf[1][0]
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return {"n": n, "loss": loss_sum / n, "accuracy": (conf[0][0] + conf[1][1]) / n, "f1": f1,
                "confusion": conf, "seconds": time.time() - t}

    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=a.eps, weight_decay=0.0)
    steps = (len(split["train"]) + a.batch - 1) // a.batch
    history, best, best_state, bad, gstep, stopped = [], float("inf"), None, 0, 0, False
    for e in range(1, a.epochs + 1):
        order = epoch_order(split["train"], a.seed, e)
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, tokens, seen, done = 0.0, 0, 0, 0, 0
        for st in range(steps):
            if a.max_steps and st >= a.max_steps:
                break
            bids = order[st * a.batch:(st + 1) * a.batch]
            x, m, y = make_batch(bids)
            if a.keras_eps:
                for g in opt.param_groups:
                    g["eps"] = a.eps / (1 - 0.999 ** (gstep + 1)) ** 0.5
            logits = model(input_ids=x, attention_mask=m).logits
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            gstep += 1
            done += 1
            loss_sum += loss.item() * len(bids)
            correct += int((logits.argmax(-1) == y).sum())
            tokens += int(m.sum())
            seen += len(bids)
            if not a.quiet and (st + 1) % 10 == 0:
                el = time.perf_counter() - t0
                print(f"{st + 1}/{steps} - {el:.0f}s {el * 1000 / done:.0f}ms/step - loss: "
                      f"{loss_sum / seen:.4f} - acc: {correct / seen:.4f} - {tokens / el:.0f} tokens/s",
                      flush=True)
        secs = time.perf_counter() - t0
        if a.throughput_only:
            print(f"Throughput: {done} steps, {tokens} tokens in {secs:.1f} s: {tokens / secs:.0f} "
                  f"tokens/s, {secs * 1000 / done:.0f} ms/step ({a.threads} threads)", flush=True)
            if a.out:
                with open(a.out, "w") as f:
                    json.dump({"steps": done, "tokens": tokens, "seconds": secs,
                               "tokens_per_s": tokens / secs, "ms_per_step": secs * 1000 / done,
                               "threads": a.threads}, f, indent=2)
            return
        vr = evaluate(split["val"])
        es = {"epoch": e, "loss": loss_sum / seen, "acc": correct / seen, "val_loss": vr["loss"],
              "val_acc": vr["accuracy"], "seconds": secs, "ms_per_step": secs * 1000 / done,
              "tokens_per_s": tokens / secs, "steps": done, "tokens": tokens}
        history.append(es)
        print(f"Epoch {e}/{a.epochs}: {done} steps - {secs:.0f}s {es['ms_per_step']:.0f}ms/step - loss: "
              f"{es['loss']:.4f} - acc: {es['acc']:.4f} - val_loss: {vr['loss']:.4f} - val_acc: "
              f"{vr['accuracy']:.4f} - {es['tokens_per_s']:.0f} tokens/s", flush=True)
        if vr["loss"] < best:
            best, bad, best_epoch = vr["loss"], 0, e
            best_state = copy.deepcopy(model.state_dict()) if a.epochs > e else None
        else:
            bad += 1
        if a.patience > 0 and bad >= a.patience:
            stopped = e < a.epochs
            break
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(best_state)
        print(f"Restored the weights of epoch {best_epoch} (best validation loss {best:.4f})")
    test = evaluate(split["test"])
    elapsed = time.time() - T_START
    train_tokens = sum(h["tokens"] for h in history)
    train_secs = sum(h["seconds"] for h in history)
    print(f"\nValidation acc (best epoch): {history[best_epoch - 1]['val_acc']:.3f}")
    print(f"Test accuracy: {test['accuracy']:.3f}   Test F1: {test['f1']:.3f}")
    print(f"Confusion matrix:\n {test['confusion']}")
    print(f"Training: {train_tokens / train_secs:.0f} tokens/s, "
          f"{train_secs * 1000 / sum(h['steps'] for h in history):.0f} ms/step "
          f"({a.threads} threads, torch {torch.__version__}, transformers {transformers.__version__})")
    print(f"Elapsed time: {elapsed:.0f} s")
    res = {"framework": "huggingface-transformers", "torch": torch.__version__,
           "transformers": transformers.__version__, "threads": a.threads,
           "config": {k: v for k, v in vars(a).items()},
           "split": {k: len(v) for k, v in split.items()}, "tokenize_s": t_tok,
           "history": history, "best_epoch": best_epoch,
           "val_acc_best": history[best_epoch - 1]["val_acc"], "val_loss_best": best,
           "stopped_early": stopped, "test": test,
           "train_tokens_per_s": train_tokens / train_secs,
           "train_ms_per_step": train_secs * 1000 / sum(h["steps"] for h in history),
           "elapsed_s": elapsed}
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"Results: {a.out}")


if __name__ == "__main__":
    main()
