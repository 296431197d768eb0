#!/usr/bin/env python3
"""benchmarks/bench_torch_gpu.py — the PyTorch peer of `tensorplug bench --model`.

The same architectures and shapes as tensorplug's presets (DistilBERT: 6
layers, BERT-base: 12; hidden 768, 12 heads, FFN 3072, vocabulary 30522,
two labels), trained the way a well-built PyTorch script trains them: AMP
bf16 autocast, scaled_dot_product_attention restricted to the flash kernel,
a fused QKV projection, fused AdamW; and again under torch.compile when it
works on the machine (both rows are reported). Synthetic batches of
--batch x --max-len real tokens (no padding), dropout 0.1 as in the
presets, random initialisation: speed does not depend on the weights.

Prints one line per row and, with --json, writes the rows: the median
ms/step of steps that each end with a synchronisation (as `tensorplug bench
--model` times its steps), the range and mean, tokens/s, TFLOP/s of model
FLOPs counted exactly as tp_model_flops() (core/model.c) counts them, and
the projected epoch of 26,250 reviews: the two sides compare directly.

scripts/gpu-check.sh runs it on the GPU machine's own PyTorch in the same
run as tensorplug's side. --smoke runs a tiny model for two steps on the CPU
(f32, plain attention where SDPA is missing) so the code is exercised
anywhere: /usr/bin/python3 benchmarks/bench_torch_gpu.py --smoke
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EPOCH_REVIEWS = 26250
PRESETS = {
    "distilbert": dict(layers=6, hidden=768, heads=12, ffn=3072, vocab=30522, positions=512,
                       types=0, head="distilbert"),
    "bert": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, positions=512,
                 types=2, head="bert"),
}
SMOKE = dict(layers=2, hidden=64, heads=4, ffn=128, vocab=1000, positions=64, types=2,
             head="bert")


def flops_per_step(c, batch, seq, labels=2):
    """tp_model_flops() of core/model.c, training: 3x the forward products."""
    B, T, H, Fd = batch, seq, c["hidden"], c["ffn"]
    layer = 2.0 * B * T * (4.0 * H * H + 2.0 * H * Fd) + 4.0 * B * T * T * H
    head = 2.0 * B * H * (H + labels)
    return 3.0 * (c["layers"] * layer + head)


class Layer(nn.Module):
    def __init__(self, c, p):
        super().__init__()
        self.heads, self.p = c["heads"], p
        self.qkv = nn.Linear(c["hidden"], 3 * c["hidden"])
        self.out = nn.Linear(c["hidden"], c["hidden"])
        self.ln1 = nn.LayerNorm(c["hidden"], eps=1e-12)
        self.up = nn.Linear(c["hidden"], c["ffn"])
        self.down = nn.Linear(c["ffn"], c["hidden"])
        self.ln2 = nn.LayerNorm(c["hidden"], eps=1e-12)

    def forward(self, x):
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.p if self.training else 0.0
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # torch < 2.0 (the smoke run on Debian's torch 1.13)
            s = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            a = F.dropout(s, drop, self.training) @ v
        a = a.transpose(1, 2).reshape(B, T, H)
        x = self.ln1(x + F.dropout(self.out(a), self.p, self.training))
        h = self.down(F.gelu(self.up(x)))
        return self.ln2(x + F.dropout(h, self.p, self.training))


class Model(nn.Module):
    """BERT or DistilBERT for sequence classification (post-LN encoder)."""

    def __init__(self, c, p=0.1, labels=2):
        super().__init__()
        self.c, self.p = c, p
        self.words = nn.Embedding(c["vocab"], c["hidden"])
        self.pos = nn.Embedding(c["positions"], c["hidden"])
        self.types = nn.Embedding(c["types"], c["hidden"]) if c["types"] else None
        self.ln = nn.LayerNorm(c["hidden"], eps=1e-12)
        self.layers = nn.ModuleList(Layer(c, p) for _ in range(c["layers"]))
        self.pool = nn.Linear(c["hidden"], c["hidden"])  # BERT pooler / DistilBERT pre_classifier
        self.cls = nn.Linear(c["hidden"], labels)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.words(ids) + self.pos(torch.arange(T, device=ids.device))[None]
        if self.types is not None:
            x = x + self.types(torch.zeros_like(ids))
        x = F.dropout(self.ln(x), self.p, self.training)
        for layer in self.layers:
            x = layer(x)
        first = x[:, 0]
        if self.c["head"] == "bert":
            h = torch.tanh(self.pool(first))
        else:
            h = F.relu(self.pool(first))
        return self.cls(F.dropout(h, self.p, self.training))


def sdpa_flash_only():
    """A context that lets SDPA use the flash kernel only (CUDA)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False,
                                              enable_mem_efficient=False)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def run(args, c, compiled):
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = Model(c).to(dev).train()
    kw = {"fused": True} if cuda else {}
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, **kw)
    step_model = torch.compile(model) if compiled else model
    gen = torch.Generator(device="cpu").manual_seed(7)
    n = args.warmup + args.steps
    ids = torch.randint(min(1000, c["vocab"] - 1), c["vocab"], (n, args.batch, args.max_len),
                        generator=gen).to(dev)
    labels = (torch.arange(args.batch) % 2).to(dev)

    def step(i):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(step_model(ids[i]), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times = []
    with sdpa_flash_only() if cuda else _Null():
        for i in range(args.warmup):
            step(i)
        sync()
        t0 = time.perf_counter()
        for i in range(args.warmup, n):
            # each step ends with a synchronisation, as `tensorplug bench`
            # times its steps: the median of these is the comparable figure
            ts = time.perf_counter()
            loss = step(i)
            sync()
            times.append((time.perf_counter() - ts) * 1000.0)
        loss = float(loss)
        total = (time.perf_counter() - t0) * 1000.0
    times.sort()
    k = len(times)
    ms = times[k // 2] if k % 2 else 0.5 * (times[k // 2 - 1] + times[k // 2])
    return dict(ms_per_step=ms, ms_min=times[0], ms_max=times[-1], ms_mean=total / k,
                tokens_per_s=args.batch * args.max_len / (ms / 1000.0),
                tflops=flops_per_step(c, args.batch, args.max_len) / (ms / 1000.0) / 1e12,
                epoch_s=math.ceil(EPOCH_REVIEWS / args.batch) * ms / 1000.0, loss=loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(PRESETS), default="distilbert")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation too)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny model for 2 steps on the CPU: checks the code runs")
    args = ap.parse_args()
    c = dict(PRESETS[args.model])
    if args.smoke:
        c = dict(SMOKE)
        args.device, args.batch, args.max_len, args.steps, args.warmup = "cpu", 2, 16, 2, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_torch_gpu.py: error: torch %s sees no CUDA device" % torch.__version__,
              file=sys.stderr)
        return 2
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print("torch %s on %s: %s, batch %d, length %d, %s, %d timed steps after %d warm-up steps"
          % (torch.__version__, dev_name, args.model if not args.smoke else "smoke model",
             args.batch, args.max_len, "bf16 autocast" if args.device != "cpu" else "f32",
             args.steps, args.warmup))
    rows = []
    for compiled in ([False] if args.no_compile else [False, True]):
        name = "torch.compile" if compiled else "torch eager"
        row = dict(impl=name, model="smoke" if args.smoke else args.model, batch=args.batch, max_len=args.max_len,
                   device=dev_name, torch=torch.__version__,
                   flops_per_step=flops_per_step(c, args.batch, args.max_len))
        try:
            if compiled and not hasattr(torch, "compile"):
                raise RuntimeError("this torch has no torch.compile")
            row.update(run(args, c, compiled))
            print("%s: %.2f ms/step (median; %.2f-%.2f), %.0f tokens/s, %.1f TFLOP/s of model "
                  "FLOPs; one epoch of %d reviews: %.1f s (loss %.4f)"
                  % (name, row["ms_per_step"], row["ms_min"], row["ms_max"], row["tokens_per_s"],
                     row["tflops"], EPOCH_REVIEWS, row["epoch_s"], row["loss"]))
        except Exception as e:  # a failing compile is a result, not a crash
            row["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            print("%s: failed: %s" % (name, row["error"]))
        rows.append(row)
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
