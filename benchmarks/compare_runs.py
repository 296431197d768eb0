#!/usr/bin/env python3
"""benchmarks/compare_runs.py — how far apart two `tensorplug train` runs are.

Usage: compare_runs.py RUN_A RUN_B [--json OUT]

Prints, per epoch, the relative differences of loss, acc, val_loss and
val_acc (results.json), of the test metrics, and the largest absolute
differences of the final parameters and Adam moments (checkpoint/
state.safetensors, read with the standard library only). Exit status 0.
"""
import array
import json
import struct
import sys


def read_state(run):
    with open(f"{run}/checkpoint/state.safetensors", "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        a = array.array("f")
        a.frombytes(data[begin:end])
        out[name] = a
    return out


def rel(a, b):
    return abs(a - b) / max(abs(a), 1e-30)


def main():
    a, b = sys.argv[1], sys.argv[2]
    out_path = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    ra = json.load(open(f"{a}/results.json"))
    rb = json.load(open(f"{b}/results.json"))
    report = {"a": a, "b": b, "epochs": [], "parameters": {}}
    for ea, eb in zip(ra["history"], rb["history"]):
        row = {"epoch": ea["epoch"]}
        for k in ("loss", "acc", "val_loss", "val_acc"):
            row[k] = [ea[k], eb[k], rel(ea[k], eb[k])]
        report["epochs"].append(row)
        print(f"epoch {ea['epoch']}: " + ", ".join(
            f"{k} {row[k][0]:.9g} vs {row[k][1]:.9g} (rel {row[k][2]:.2g})"
            for k in ("loss", "acc", "val_loss", "val_acc")))
    ta, tb = ra["test"], rb["test"]
    report["test"] = {k: [ta[k], tb[k], rel(ta[k], tb[k])] for k in ("accuracy", "loss")}
    print(f"test: accuracy {ta['accuracy']:.6g} vs {tb['accuracy']:.6g}, "
          f"loss {ta['loss']:.9g} vs {tb['loss']:.9g}")
    sa, sb = read_state(a), read_state(b)
    for name in ("values", "adam_m", "adam_v"):
        x, y = sa[name], sb[name]
        worst = max(abs(p - q) for p, q in zip(x, y))
        same = sum(1 for p, q in zip(x, y) if p == q) / len(x)
        report["parameters"][name] = {"max_abs_diff": worst, "identical_fraction": same,
                                      "max_abs": max(abs(p) for p in x)}
        print(f"{name}: largest difference {worst:.3g}, {100 * same:.1f}% identical")
    for r, key in ((ra, "a_world_size"), (rb, "b_world_size")):
        report[key] = r.get("distributed", {}).get("world_size", 1)
    if out_path:
        with open(out_path, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
