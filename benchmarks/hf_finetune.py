#!/usr/bin/env python3
"""The peer of `tensorplug train`: the same fine-tune with Hugging Face
Transformers + PyTorch (the newest from PyPI, benchmarks/hf_venv.sh) at its
best CPU settings, on the split a tensorplug run recorded.

    .venv-hf/bin/python benchmarks/hf_finetune.py --model models/all-MiniLM-L6-v2 \\
        --run runs/recipe-a-tensorplug --max-len 128 --batch 32 --lr 5e-5 --epochs 1 \\
        --seed 42 --threads 2 --precision f32 --out runs/recipe-a-hf/results.json

What is the same as tensorplug's `train`:
  * the split: RUN/split/{train,val,test}.txt (record ids of the JSONL records
    under --data), read in the recorded order;
  * the per-epoch shuffle: tensorplug's seeded splitmix64 Fisher-Yates
    (core/train.c epoch_order) reproduced exactly, so every step sees the same
    reviews as tensorplug's step;
  * tokenization: the model folder's fast tokenizer (tensorplug's gives
    identical ids), truncation to --max-len, padding to the longest sequence of
    each batch (dynamic padding);
  * the model: AutoModelForSequenceClassification from the folder (or, with
    --init random, from its config.json with random weights), 2 labels,
    dropout as in its config;
  * the optimiser: Adam, betas (0.9, 0.999), eps 1e-7 (--keras-eps: Keras'
    placement, as tensorplug's `--optimizer adam`), constant learning rate, no
    weight decay, no clipping; mean cross-entropy;
  * evaluation: validation each epoch, early stopping with restore-best, test
    accuracy, F1 of label 1, confusion matrix;
  * the throughput figure: real (non-padding) tokens of the training steps per
    second of the training loop (evaluation excluded), ms per step.
PyTorch at its best on a CPU: SDPA attention (--attn), torch.set_num_threads
(--threads) with the caller's OMP_WAIT_POLICY, the fused CPU Adam where this
torch has it, inference_mode and length-sorted batches at evaluation, bf16
autocast with --precision bf16 (f32 otherwise), torch.compile with --compile.
What differs: dropout masks (other RNGs), float summation order, and with
--init random the initial weights.

The results JSON records the run id (--run-id), the settings, torch's BLAS
and build lines, the CPU, the load averages and the peak resident memory, so
that benchmarks/compare.py can refuse a stale or mismatched result.
"""
import argparse
import copy
import glob
import gzip
import json
import os
import platform
import resource
import sys
import time

T_START = time.time()
M64 = (1 << 64) - 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_data():
    shared = os.environ.get("TP_SHARED_DIR") or os.path.join(REPO, "..", "shared")
    return os.path.join(shared, "data", "imdb")


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


def read_ids(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load_avg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def torch_build_info(torch):
    """torch.__config__.show()'s BLAS and math-library lines."""
    keep = []
    for line in torch.__config__.show().splitlines():
        s = line.strip()
        if any(k in s for k in ("Math Kernel", "MKL-DNN", "oneDNN", "OpenMP", "CPU capability", "LAPACK")):
            keep.append(s.lstrip("- "))
        elif s.startswith("- Build settings:"):
            keep += [p.strip() for p in s.split(",") if "BLAS_INFO" in p or "LAPACK_INFO" in p]
    return keep


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (config.json, weights unless --init random, vocab)")
    ap.add_argument("--init", choices=["pretrained", "random"], default="pretrained")
    ap.add_argument("--tokenizer", help="folder of the tokenizer (vocab.txt) [--model]")
    ap.add_argument("--run", required=True, help="a tensorplug run folder holding split/{train,val,test}.txt")
    ap.add_argument("--data", action="append", help="dataset folder or files [$TP_SHARED_DIR/data/imdb]")
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
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: torch.autocast(cpu, bfloat16) around the forward passes")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation [sdpa]")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps")
    ap.add_argument("--throughput-only", action="store_true", help="train only; no validation or test")
    ap.add_argument("--run-id", default="", help="recorded in the results (freshness check)")
    ap.add_argument("--out", help="results JSON path")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    data = a.data or [default_data()]
    load_start = load_avg()

    recs = load_records(data)
    split = {k: read_ids(os.path.join(a.run, "split", k + ".txt")) for k in ("train", "val", "test")}
    missing = [i for k in split for i in split[k] if i not in recs]
    if missing:
        sys.exit(f"hf_finetune: {len(missing)} ids of {a.run}/split are not in {data} (first: {missing[0]})")
    print(f"Data: split from {a.run}: train {len(split['train'])} / val {len(split['val'])} / "
          f"test {len(split['test'])}", flush=True)

    tok = AutoTokenizer.from_pretrained(a.tokenizer or a.model)
    t0 = time.time()
    ids = {}
    all_ids = split["train"] + split["val"] + split["test"]
    enc = tok([recs[i][0] for i in all_ids], truncation=True, max_length=a.max_len)["input_ids"]
    for i, e in zip(all_ids, enc):
        ids[i] = e
    t_tok = time.time() - t0
    print(f"Tokenized {len(all_ids)} texts (max length {a.max_len}) in {t_tok:.1f} s", flush=True)

    torch.manual_seed(a.seed)
    if a.init == "random":
        cfg = AutoConfig.from_pretrained(a.model, num_labels=2)
        model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation=a.attn)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=2,
                                                                   attn_implementation=a.attn)
    fwd = torch.compile(model) if a.compile else model
    pad = tok.pad_token_id
    use_bf16 = a.precision == "bf16"

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

    def logits_of(x, m):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            return fwd(input_ids=x, attention_mask=m).logits.float()

    def evaluate(id_list):
        """inference_mode, batches of similar length (sorted), as tensorplug evaluates."""
        model.eval()
        order = sorted(range(len(id_list)), key=lambda k: len(ids[id_list[k]]))
        loss_sum, conf, tokens = 0.0, [[0, 0], [0, 0]], 0
        t = time.time()
        with torch.inference_mode():
            for s in range(0, len(order), a.eval_batch):
                bids = [id_list[k] for k in order[s:s + a.eval_batch]]
                x, m, y = make_batch(bids)
                logits = logits_of(x, m)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                tokens += int(m.sum())
                for yt, yp in zip(y.tolist(), logits.argmax(-1).tolist()):
                    conf[yt][yp] += 1
        n = len(id_list)
        tp, fp, fn = conf[1][1], conf[0][1], conf[1][0]
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        secs = time.time() - t
        return {"n": n, "loss": loss_sum / n, "accuracy": (conf[0][0] + conf[1][1]) / n, "f1": f1,
                "confusion": conf, "seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs}

    try:
        opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=a.eps,
                               weight_decay=0.0, fused=True)
        fused_adam = True
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=a.eps, weight_decay=0.0)
        fused_adam = False
    steps = (len(split["train"]) + a.batch - 1) // a.batch
    history, best, best_state, bad, gstep, stopped, best_epoch = [], float("inf"), None, 0, 0, False, 1
    for e in range(1, a.epochs + 1):
        order = epoch_order(split["train"], a.seed, e)
        model.train()
        c0 = time.process_time()
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
            logits = logits_of(x, m)
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
        cpu_secs = time.process_time() - c0
        es = {"epoch": e, "loss": loss_sum / seen, "acc": correct / seen, "seconds": secs,
              "cpu_seconds": cpu_secs,
              "ms_per_step": secs * 1000 / done, "tokens_per_s": tokens / secs, "steps": done,
              "tokens": tokens}
        if a.throughput_only:
            history.append(es)
            best_epoch = e
            break
        vr = evaluate(split["val"])
        es.update({"val_loss": vr["loss"], "val_acc": vr["accuracy"]})
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
    test = None
    if not a.throughput_only:
        if best_state is not None and best_epoch != history[-1]["epoch"]:
            model.load_state_dict(best_state)
            print(f"Restored the weights of epoch {best_epoch} (best validation loss {best:.4f})")
        test = evaluate(split["test"])
    elapsed = time.time() - T_START
    train_tokens = sum(h["tokens"] for h in history)
    train_secs = sum(h["seconds"] for h in history)
    train_steps = sum(h["steps"] for h in history)
    if test:
        print(f"\nValidation acc (best epoch): {history[best_epoch - 1]['val_acc']:.3f}")
        print(f"Test accuracy: {test['accuracy']:.3f}   Test F1: {test['f1']:.3f}")
        print(f"Confusion matrix:\n {test['confusion']}")
    print(f"Training: {train_tokens / train_secs:.0f} tokens/s, {train_secs * 1000 / train_steps:.0f} ms/step "
          f"({a.threads} threads, {a.precision}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}); peak memory {peak_rss_bytes() / 2**20:.0f} MiB")
    print(f"Elapsed time: {elapsed:.0f} s")
    res = {"framework": "huggingface-transformers", "torch": torch.__version__,
           "transformers": transformers.__version__, "torch_build": torch_build_info(torch),
           "run_id": a.run_id, "command": sys.argv, "threads": a.threads,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu": cpu_model(),
           "load_avg_start": load_start, "load_avg_end": load_avg(),
           "settings": {"model": a.model, "init": a.init, "max_len": a.max_len, "batch": a.batch,
                        "epochs": a.epochs, "lr": a.lr, "seed": a.seed, "precision": a.precision,
                        "attn": a.attn, "compile": a.compile, "fused_adam": fused_adam,
                        "max_steps": a.max_steps, "throughput_only": a.throughput_only,
                        "threads": a.threads},
           "split": {k: len(v) for k, v in split.items()}, "tokenize_s": t_tok,
           "history": history, "best_epoch": best_epoch,
           "val_acc_best": history[best_epoch - 1].get("val_acc"), "val_loss_best": best,
           "stopped_early": stopped, "test": test,
           "train_tokens_per_s": train_tokens / train_secs,
           "train_ms_per_step": train_secs * 1000 / train_steps,
           "peak_rss_bytes": peak_rss_bytes(), "elapsed_s": elapsed}
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"Results: {a.out}")


if __name__ == "__main__":
    main()
