#!/usr/bin/env python3
"""benchmarks/compare.py — tensorplug and its peers, side by side.

  compare.py train --name NAME --model M [tensorplug train options] [--pairs 3]
      Interleaved pairs (tensorplug, peer, tensorplug, peer, ...) of the same
      fine-tune: `tensorplug train` and benchmarks/hf_finetune.py (the newest
      PyTorch + Transformers, benchmarks/hf_venv.sh) on the split the
      tensorplug run of the pair recorded, same threads and OMP_WAIT_POLICY,
      the peer in bf16 autocast when tensorplug computes in bf16 (--peer-precision
      and --compile add other rows). Ratio per pair: training tokens/s,
      tensorplug over peer; the median and the spread are reported.
  compare.py eval --name NAME --model RUN/model [--subset 1 --max-len 256]
      `tensorplug eval --test-split` against ONNX Runtime (benchmarks/ort_eval.py:
      the same folder exported, every graph optimisation on; f32 and int8) on
      the same reviews, interleaved pairs, reviews/s; --precisions f32,i8 runs
      tensorplug at each (the same reviews: refused otherwise) and checks each
      further precision's accuracy against the first.
  compare.py --self-test
      Proves the checks below refuse a missing, stale or mismatched result.

Every result file (docs/results/NAME.json unless --results-dir) records the
commit, the command, the CPU, the load averages around each run, tensorplug's
device description (OpenBLAS core, GEMM library) and the peer's torch build
lines (BLAS), the figures of every run and the medians. The script exits 1
when a side's result is missing, older than its run, from another run (run
id) or made with other settings (threads, batch, length, precision, split,
tokens seen), and when a --min-ratio check fails; 2 on bad usage. --skip-hf
runs tensorplug only: no ratio is computed and no earlier peer result is
read. Paths are written relative to the repository (or as ../shared).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.realpath(os.environ.get("TP_SHARED_DIR") or os.path.join(REPO, "..", "shared"))


class Refused(Exception):
    """A result that cannot be compared (missing, stale, mismatched)."""


# ---------------------------------------------------------------- helpers

def rel(path):
    """A path as the result files show it: relative to the repository."""
    p = os.path.realpath(path)
    if p.startswith(SHARED + os.sep) or p == SHARED:
        return "../shared" + p[len(SHARED):]
    if p.startswith(REPO + os.sep):
        return p[len(REPO) + 1:]
    return path


def scrub(obj):
    """Replaces absolute paths of this machine inside any JSON value."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        s = obj
        for root, name in ((SHARED, "../shared"), (os.path.realpath(REPO), "."), (REPO, ".")):
            s = s.replace(root + os.sep, name + "/").replace(root, name)
        return s
    return obj


def load_avg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


_COMMIT = []


def commit():
    """The commit when the scenario started (a commit made while it ran does
    not describe the binaries it measured)."""
    if not _COMMIT:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        _COMMIT.append(f"{head}{'-dirty' if dirty else ''}" if head else None)
    return _COMMIT[0]


def run(cmd, env_extra, log):
    """Runs cmd (list) from the repository root; returns (seconds, load before, load after)."""
    env = dict(os.environ, **env_extra)
    print(f"== {' '.join(cmd)}", flush=True)
    before, t0 = load_avg(), time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    secs = time.time() - t0
    after = load_avg()
    print(f"   exit {rc}, {secs:.0f} s, load {before} -> {after} (log: {rel(log)})", flush=True)
    if rc != 0:
        raise Refused(f"{cmd[0]} exited {rc}: see {rel(log)}")
    return secs, before, after


def read_json(path, started):
    """A result file written after `started` (else Refused: missing or stale)."""
    if not os.path.exists(path):
        raise Refused(f"{rel(path)}: missing")
    if os.path.getmtime(path) < started:
        raise Refused(f"{rel(path)}: stale (written before this run started)")
    with open(path) as f:
        return json.load(f)


def expect(what, got, want):
    if isinstance(want, float) and isinstance(got, (int, float)):
        if abs(got - want) > 1e-9 * max(1.0, abs(want)):
            raise Refused(f"{what}: {got}, expected {want}")
    elif got != want:
        raise Refused(f"{what}: {got!r}, expected {want!r}")


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def tensorplug_exe(build):
    exe = os.path.join(REPO, build, "cli", "tensorplug")
    if not os.access(exe, os.X_OK):
        sys.exit(f"compare.py: {rel(exe)} not found: build first (meson setup {build} "
                 f"-Dbuildtype=release && ninja -C {build}) or pass --build")
    return exe


def peer_python():
    return subprocess.run([os.path.join(REPO, "benchmarks", "hf_venv.sh")], capture_output=True,
                          text=True, check=True).stdout.strip()


# ---------------------------------------------------------------- checks

def check_tp_train(r, a, precision):
    c = r["config"]
    expect("tensorplug threads", c["threads"], a.threads)
    expect("tensorplug batch", c["batch"], a.batch)
    expect("tensorplug max_len", c["max_len"], a.max_len)
    expect("tensorplug subset", c["subset"], a.subset)
    expect("tensorplug epochs", c["epochs"], a.epochs)
    expect("tensorplug seed", c["seed"], a.seed)
    expect("tensorplug precision", r["precision"], precision)


def check_hf_train(h, a, run_id, precision, compile_, tp):
    expect("peer run id", h.get("run_id"), run_id)
    s = h["settings"]
    expect("peer threads", s["threads"], a.threads)
    expect("peer batch", s["batch"], a.batch)
    expect("peer max_len", s["max_len"], a.max_len)
    expect("peer epochs", s["epochs"], a.epochs)
    expect("peer seed", s["seed"], a.seed)
    expect("peer precision", s["precision"], precision)
    expect("peer compile", s["compile"], compile_)
    expect("peer OMP_WAIT_POLICY", h.get("omp_wait_policy"), a.omp_wait_policy)
    split = {k: tp["split"][k]["n"] if isinstance(tp["split"][k], dict) else tp["split"][k]
             for k in ("train", "val", "test")}
    expect("peer split sizes", h["split"], split)
    expect("peer training tokens (the same batches)", sum(e["tokens"] for e in h["history"]),
           sum(e["tokens"] for e in tp["history"]))


def cpu_rate(history):
    """Training tokens per second of process CPU time (all threads): the work
    whatever the machine's other load; None when not recorded."""
    cpu = [e.get("cpu_seconds") for e in history]
    if any(c is None or c <= 0 for c in cpu):
        return None
    return sum(e["tokens"] for e in history) / sum(cpu)


def tp_train_figures(r):
    h = r["history"]
    secs = sum(e["seconds"] for e in h)
    return {"tokens_per_s": sum(e["tokens"] for e in h) / secs,
            "tokens_per_cpu_s": cpu_rate(h),
            "ms_per_step": secs * 1000 / sum(e["steps"] for e in h),
            "test_accuracy": r["test"]["accuracy"], "test_f1": r["test"]["f1"],
            "peak_rss_bytes": r.get("peak_rss_bytes"), "precision": r["precision"]}


def hf_train_figures(h):
    return {"tokens_per_s": h["train_tokens_per_s"], "ms_per_step": h["train_ms_per_step"],
            "tokens_per_cpu_s": cpu_rate(h["history"]),
            "test_accuracy": h["test"]["accuracy"] if h.get("test") else None,
            "test_f1": h["test"]["f1"] if h.get("test") else None,
            "peak_rss_bytes": h["peak_rss_bytes"], "precision": h["settings"]["precision"]}


# ---------------------------------------------------------------- train

def scenario_train(a):
    exe = tensorplug_exe(a.build)
    precision = a.precision
    peers = [] if a.skip_hf else [(p, False) for p in (a.peer_precision or [precision])]
    if a.compile and not a.skip_hf:
        peers.append((peers[0][0] if peers else precision, True))
    py = peer_python() if peers else None
    env = {"OMP_WAIT_POLICY": a.omp_wait_policy, "OMP_NUM_THREADS": str(a.threads)}
    runs = os.path.join(REPO, "runs", "compare", a.name)
    shutil.rmtree(runs, ignore_errors=True)
    os.makedirs(runs)
    pairs = []
    for i in range(1, a.pairs + 1):
        pair = {"pair": i}
        tp_out = os.path.join(runs, f"tensorplug-{i}")
        cmd = [exe, "train", "--model", a.model, "--data", a.data, "--subset", str(a.subset),
               "--max-len", str(a.max_len), "--batch", str(a.batch), "--lr", str(a.lr),
               "--epochs", str(a.epochs), "--seed", str(a.seed), "--threads", str(a.threads),
               "--precision", precision, "--out", tp_out]
        if a.init == "random":
            cmd += ["--init", "random"]
        if a.vocab:
            cmd += ["--vocab", a.vocab]
        started = time.time()
        secs, lb, la = run(cmd, env, tp_out + ".log")
        r = read_json(os.path.join(tp_out, "results.json"), started)
        check_tp_train(r, a, precision)
        pair["tensorplug"] = dict(tp_train_figures(r), wall_s=secs, load_before=lb, load_after=la,
                                  command=[rel(x) if os.path.isabs(x) else x for x in cmd],
                                  device=r["device_description"], results=rel(tp_out))
        for prec, comp in peers:
            tag = f"hf-{prec}{'-compile' if comp else ''}-{i}"
            out = os.path.join(runs, tag, "results.json")
            run_id = uuid.uuid4().hex
            model = a.hf_model or a.model
            cmd = [py, os.path.join(REPO, "benchmarks", "hf_finetune.py"), "--model", model,
                   "--run", tp_out, "--data", a.data, "--max-len", str(a.max_len),
                   "--batch", str(a.batch), "--lr", str(a.lr), "--epochs", str(a.epochs),
                   "--seed", str(a.seed), "--threads", str(a.threads), "--precision", prec,
                   "--run-id", run_id, "--out", out, "--quiet"]
            if a.init == "random":
                cmd += ["--init", "random"]
            if a.hf_tokenizer:
                cmd += ["--tokenizer", a.hf_tokenizer]
            if comp:
                cmd.append("--compile")
            started = time.time()
            secs, lb, la = run(cmd, env, os.path.join(runs, tag + ".log"))
            h = read_json(out, started)
            check_hf_train(h, a, run_id, prec, comp, r)
            pair[tag[:-len(f"-{i}")]] = dict(hf_train_figures(h), wall_s=secs, load_before=lb,
                                             load_after=la, torch=h["torch"],
                                             transformers=h["transformers"],
                                             torch_build=h["torch_build"],
                                             command=[rel(x) if os.path.isabs(x) else x
                                                      for x in cmd[1:]])
        pairs.append(pair)
    return finish_train(a, pairs, [f"hf-{p}{'-compile' if c else ''}" for p, c in peers])


def finish_train(a, pairs, peer_keys):
    res = header(a)
    res["pairs"] = pairs
    tp_tps = [p["tensorplug"]["tokens_per_s"] for p in pairs]
    res["tensorplug"] = {"tokens_per_s": summary(tp_tps),
                         "peak_rss_bytes": max(p["tensorplug"]["peak_rss_bytes"] or 0 for p in pairs),
                         "test_accuracy": [p["tensorplug"]["test_accuracy"] for p in pairs],
                         "device": pairs[0]["tensorplug"]["device"]}
    res["peers"] = {}
    failed = []
    for k in peer_keys:
        ratios = [p["tensorplug"]["tokens_per_s"] / p[k]["tokens_per_s"] for p in pairs]
        cpu = [(p["tensorplug"]["tokens_per_cpu_s"], p[k]["tokens_per_cpu_s"]) for p in pairs]
        res["peers"][k] = {"tokens_per_s": summary([p[k]["tokens_per_s"] for p in pairs]),
                           "ratio": summary(ratios),
                           "ratio_cpu_time": summary([t / h for t, h in cpu])
                           if all(t and h for t, h in cpu) else None,
                           "peak_rss_bytes": max(p[k]["peak_rss_bytes"] for p in pairs),
                           "test_accuracy": [p[k]["test_accuracy"] for p in pairs],
                           "torch": pairs[0][k]["torch"], "torch_build": pairs[0][k]["torch_build"]}
    if peer_keys:
        best = max(peer_keys, key=lambda k: res["peers"][k]["tokens_per_s"]["median"])
        res["best_peer"] = best
        ratio = statistics.median(p["tensorplug"]["tokens_per_s"] / p[best]["tokens_per_s"] for p in pairs)
        res["ratio_vs_best_peer"] = ratio
        res["checks"] = {
            f"ratio vs {best} >= {a.min_ratio}": ratio >= a.min_ratio,
            "peak RSS below every peer's": all(res["tensorplug"]["peak_rss_bytes"] <
                                               res["peers"][k]["peak_rss_bytes"] for k in peer_keys)}
        failed = [k for k, ok in res["checks"].items() if not ok and a.min_ratio > 0]
    else:
        res["best_peer"] = None
        res["ratio_vs_best_peer"] = None
        res["checks"] = {"peer": "skipped (--skip-hf): no comparison"}
    report_train(res, peer_keys)
    return write(a, res, failed)


def report_train(res, peer_keys):
    print()
    print(f"{'pair':>4s}  {'tensorplug tok/s':>16s}" + "".join(f"  {k + ' tok/s':>22s}" for k in peer_keys))
    for p in res["pairs"]:
        print(f"{p['pair']:4d}  {p['tensorplug']['tokens_per_s']:16.0f}"
              + "".join(f"  {p[k]['tokens_per_s']:22.0f}" for k in peer_keys))
    for k in peer_keys:
        r, rc = res["peers"][k]["ratio"], res["peers"][k]["ratio_cpu_time"]
        cpu = f"per CPU second {rc['median']:.2f}x; " if rc else ""
        print(f"tensorplug / {k}: median {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f}); "
              f"{cpu}peak RSS {res['tensorplug']['peak_rss_bytes'] / 2**20:.0f} vs "
              f"{res['peers'][k]['peak_rss_bytes'] / 2**20:.0f} MiB")


# ---------------------------------------------------------------- eval

def tp_eval_once(a, exe, env, runs, i, prec):
    """One tensorplug eval at precision prec: its figures and the ids file."""
    ids = os.path.join(runs, f"ids-{prec}-{i}.txt")
    out = os.path.join(runs, f"tensorplug-{prec}-{i}.json")
    cmd = [exe, "eval", "--model", a.model, "--data", a.data, "--test-split", "--subset",
           str(a.subset), "--seed", str(a.seed), "--max-len", str(a.max_len), "--eval-batch",
           str(a.batch), "--threads", str(a.threads), "--precision", prec, "--json",
           "--ids-out", ids]
    started = time.time()
    before, t0 = load_avg(), time.time()
    print(f"== {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise Refused(f"tensorplug eval exited {proc.returncode}: {proc.stderr[-2000:]}")
    with open(out, "w") as f:
        f.write(proc.stdout)
    r = read_json(out, started)
    n_ids = len(open(ids).read().split())
    expect("tensorplug evaluated reviews", r["n"], n_ids)
    expect("tensorplug precision", r["precision"], prec)
    return ids, {"reviews_per_s": r["reviews_per_s"], "tokens_per_s": r["tokens_per_s"],
                 "accuracy": r["accuracy"], "seconds": r["seconds"], "n": r["n"],
                 "precision": r["precision"], "cpu_seconds": r.get("cpu_seconds"),
                 "peak_rss_bytes": r["peak_rss_bytes"], "load_before": before,
                 "load_after": load_avg(), "wall_s": time.time() - t0,
                 "command": [rel(x) if os.path.isabs(x) else x for x in cmd]}


def scenario_eval(a):
    exe = tensorplug_exe(a.build)
    py = None if a.skip_hf else peer_python()
    env = {"OMP_WAIT_POLICY": a.omp_wait_policy, "OMP_NUM_THREADS": str(a.threads)}
    runs = os.path.join(REPO, "runs", "compare", a.name)
    shutil.rmtree(runs, ignore_errors=True)
    os.makedirs(runs)
    variants = [] if a.skip_hf else a.variants.split(",")
    precs = a.precisions.split(",")
    if a.check_precision not in precs:
        raise Refused(f"--check-precision {a.check_precision} is not among --precisions {a.precisions}")
    pairs = []
    for i in range(1, a.pairs + 1):
        pair = {"pair": i}
        ids = None
        for prec in precs:  # ours at each precision, then the peer's variants: interleaved
            got, pair[f"tensorplug-{prec}"] = tp_eval_once(a, exe, env, runs, i, prec)
            if ids is None:
                ids = got
            elif open(got).read() != open(ids).read():
                raise Refused(f"tensorplug at {prec} evaluated other reviews than at {precs[0]}")
        n = pair[f"tensorplug-{precs[0]}"]["n"]
        for v in variants:
            run_id = uuid.uuid4().hex
            o = os.path.join(runs, f"ort-{v}-{i}.json")
            cmd = [py, os.path.join(REPO, "benchmarks", "ort_eval.py"), "--model", a.model,
                   "--ids", ids, "--data", a.data, "--max-len", str(a.max_len), "--batch",
                   str(a.batch), "--threads", str(a.threads), "--variant", v, "--run-id", run_id,
                   "--work", os.path.join(REPO, "runs", "ort"), "--out", o]
            started = time.time()
            secs, lb, la = run(cmd, env, o + ".log")
            h = read_json(o, started)
            expect("ORT run id", h["run_id"], run_id)
            expect("ORT threads", h["settings"]["threads"], a.threads)
            expect("ORT max_len", h["settings"]["max_len"], a.max_len)
            expect("ORT reviews", h["n"], n)
            expect("ORT OMP_WAIT_POLICY", h.get("omp_wait_policy"), a.omp_wait_policy)
            pair[f"ort-{v}"] = {"reviews_per_s": h["reviews_per_s"], "tokens_per_s": h["tokens_per_s"],
                                "accuracy": h["accuracy"], "seconds": h["seconds"],
                                "cpu_seconds": h.get("cpu_seconds"),
                                "peak_rss_bytes": h["peak_rss_bytes"], "load_before": lb,
                                "load_after": la, "wall_s": secs, "onnxruntime": h["onnxruntime"],
                                "graph_optimization": h["graph_optimization"],
                                "command": [rel(x) if os.path.isabs(x) else x for x in cmd[1:]]}
        pairs.append(pair)
    res = header(a)
    res["pairs"] = pairs
    res["tensorplug"] = {
        p: {"reviews_per_s": summary([q[f"tensorplug-{p}"]["reviews_per_s"] for q in pairs]),
            "accuracy": pairs[0][f"tensorplug-{p}"]["accuracy"]} for p in precs}
    res["peers"] = {}
    failed = []
    res["checks"] = {}
    if len(precs) > 1:
        acc = {p: res["tensorplug"][p]["accuracy"] for p in precs}
        for p in precs[1:]:
            res["checks"][f"tensorplug {p} accuracy within {a.accuracy_tol} of {precs[0]}"] = \
                abs(acc[p] - acc[precs[0]]) <= a.accuracy_tol
    for v in variants:
        k = f"ort-{v}"
        peer = {"reviews_per_s": summary([q[k]["reviews_per_s"] for q in pairs]),
                "accuracy": pairs[0][k]["accuracy"], "ratio": {}, "ratio_cpu_time": {}}
        for p in precs:
            side = f"tensorplug-{p}"
            peer["ratio"][p] = summary([q[side]["reviews_per_s"] / q[k]["reviews_per_s"] for q in pairs])
            cpu = [(q[side].get("cpu_seconds"), q[k].get("cpu_seconds")) for q in pairs]
            if all(t and h for t, h in cpu):
                peer["ratio_cpu_time"][p] = summary([h / t for t, h in cpu])
        res["peers"][k] = peer
    if variants:
        res["fastest_peer"] = max(res["peers"], key=lambda k: res["peers"][k]["reviews_per_s"]["median"])
        rf32 = res["peers"].get("ort-f32", {}).get("ratio", {}).get(a.check_precision, {}).get("median")
        res["checks"][f"tensorplug {a.check_precision} / ort-f32 >= {a.min_ratio}"] = \
            rf32 is not None and rf32 >= a.min_ratio
        print()
        for k, peer in res["peers"].items():
            for p in precs:
                r = peer["ratio"][p]
                print(f"tensorplug {p} / {k}: median {r['median']:.2f}x (min {r['min']:.2f}, "
                      f"max {r['max']:.2f}); accuracy {res['tensorplug'][p]['accuracy']:.4f} vs "
                      f"{peer['accuracy']:.4f}")
    else:
        res["checks"]["peer"] = "skipped (--skip-hf): no comparison"
    failed = [k for k, ok in res["checks"].items() if ok is False and (a.min_ratio > 0 or "accuracy" in k)]
    return write(a, res, failed)


# ---------------------------------------------------------------- accuracy

def scenario_accuracy(a):
    """Test accuracy of two tensorplug results (e.g. f32 and bf16 recipe A)."""
    res = {"name": a.name, "scenario": "accuracy", "commit": commit(),
           "command": ["benchmarks/compare.py"] + sys.argv[1:], "inputs": {}}
    accs = {}
    for key in (a.a, a.b):
        path = os.path.join(REPO, a.results_dir, key + ".json")
        if not os.path.exists(path):
            raise Refused(f"{rel(path)}: missing (run that comparison first)")
        with open(path) as f:
            r = json.load(f)
        accs[key] = r["pairs"][0]["tensorplug"]["test_accuracy"]
        res["inputs"][key] = {"commit": r["commit"], "test_accuracy": accs[key],
                              "precision": r["pairs"][0]["tensorplug"]["precision"]}
    diff = accs[a.b] - accs[a.a]
    res["difference"] = diff
    res["checks"] = {f"|{a.b} - {a.a}| <= {a.tol}": abs(diff) <= a.tol}
    print(f"test accuracy {a.a} {accs[a.a]:.4f}, {a.b} {accs[a.b]:.4f}: difference {diff:+.4f}")
    return write(a, res, [k for k, ok in res["checks"].items() if not ok])


# ---------------------------------------------------------------- output

def header(a):
    return {"name": a.name, "scenario": a.scenario, "commit": commit(),
            "command": ["benchmarks/compare.py"] + sys.argv[1:], "cpu": cpu_model(),
            "cores": os.cpu_count(), "threads": a.threads, "omp_wait_policy": a.omp_wait_policy,
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "load_avg_end": load_avg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def write(a, res, failed):
    res = scrub(res)
    text = json.dumps(res, indent=2)
    parent = os.path.dirname(os.path.realpath(REPO))
    if parent != os.sep and parent in text:
        raise Refused(f"the result still names {parent}: refusing to write it")
    out = os.path.join(REPO, a.results_dir, a.name + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"\nResults: {rel(out)}")
    for k, ok in res.get("checks", {}).items():
        print(f"check {k}: {ok}")
    if failed:
        print(f"compare.py: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- self-test

def self_test():
    """Each refusal the docstring promises, on fabricated result files."""
    tmp = tempfile.mkdtemp(prefix="tp-compare-")
    a = argparse.Namespace(threads=2, batch=32, max_len=128, subset=0.05, epochs=1, seed=42,
                           omp_wait_policy="PASSIVE")
    tp = {"config": {"threads": 2, "batch": 32, "max_len": 128, "subset": 0.05, "epochs": 1,
                     "seed": 42}, "precision": "f32",
          "split": {"train": {"n": 1750}, "val": {"n": 250}, "test": {"n": 500}},
          "history": [{"tokens": 1000, "seconds": 1.0, "steps": 55}]}
    hf = {"run_id": "abc", "omp_wait_policy": "PASSIVE",
          "settings": {"threads": 2, "batch": 32, "max_len": 128, "epochs": 1, "seed": 42,
                       "precision": "f32", "compile": False},
          "split": {"train": 1750, "val": 250, "test": 500}, "history": [{"tokens": 1000}]}
    path = os.path.join(tmp, "results.json")
    started = time.time() - 10
    fails = []

    def must_refuse(what, fn):
        try:
            fn()
        except Refused as e:
            print(f"self-test: refused as it must ({what}): {e}")
            return
        fails.append(what)

    def write_file(obj, mtime=None):
        with open(path, "w") as f:
            json.dump(obj, f)
        if mtime:
            os.utime(path, (mtime, mtime))

    # a good pair passes
    write_file(hf)
    check_tp_train(tp, a, "f32")
    check_hf_train(read_json(path, started), a, "abc", "f32", False, tp)
    os.remove(path)
    must_refuse("missing peer result", lambda: read_json(path, started))
    write_file(hf, mtime=started - 100)
    must_refuse("stale peer result", lambda: read_json(path, started))
    must_refuse("another run's result", lambda: check_hf_train(hf, a, "xyz", "f32", False, tp))
    for key, bad in (("threads", 1), ("precision", "bf16"), ("max_len", 256), ("batch", 8)):
        h = json.loads(json.dumps(hf))
        h["settings"][key] = bad
        must_refuse(f"peer {key} differs", lambda h=h: check_hf_train(h, a, "abc", "f32", False, tp))
    h = json.loads(json.dumps(hf))
    h["omp_wait_policy"] = None
    must_refuse("peer OMP_WAIT_POLICY differs", lambda: check_hf_train(h, a, "abc", "f32", False, tp))
    h = json.loads(json.dumps(hf))
    h["history"][0]["tokens"] = 999
    must_refuse("peer saw other batches", lambda: check_hf_train(h, a, "abc", "f32", False, tp))
    t = json.loads(json.dumps(tp))
    t["precision"] = "bf16"
    must_refuse("tensorplug precision differs", lambda: check_tp_train(t, a, "f32"))
    t = json.loads(json.dumps(tp))
    t["config"]["threads"] = 1
    must_refuse("tensorplug threads differ", lambda: check_tp_train(t, a, "f32"))
    must_refuse("peer compiled or not", lambda: check_hf_train(hf, a, "abc", "f32", True, tp))
    # --skip-hf: no peer result is read, however fresh one looks
    write_file(hf)
    b = argparse.Namespace(name="self-test", scenario="train", threads=2, omp_wait_policy="PASSIVE",
                           results_dir=os.path.relpath(tmp, REPO), min_ratio=1.5)
    pair = {"pair": 1, "tensorplug": {"tokens_per_s": 10.0, "peak_rss_bytes": 1, "test_accuracy": 0.5,
                                      "device": "cpu"}}
    rc = finish_train(b, [pair], [])
    with open(os.path.join(tmp, "self-test.json")) as f:
        out = json.load(f)
    if rc != 0 or out["ratio_vs_best_peer"] is not None or out["peers"]:
        fails.append("--skip-hf made a ratio")
    # absolute paths never reach a result file
    if scrub({"p": os.path.join(REPO, "runs", "x"), "q": os.path.join(SHARED, "data")}) != \
            {"p": "./runs/x", "q": "../shared/data"}:
        fails.append("paths kept")
    shutil.rmtree(tmp)
    if fails:
        print(f"self-test: NOT refused: {', '.join(fails)}", file=sys.stderr)
        return 1
    print("self-test: every mismatch was refused")
    return 0


# ---------------------------------------------------------------- main

def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        return self_test()
    commit()  # noted now, before anything runs
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="scenario", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="result name: RESULTS_DIR/NAME.json")
    common.add_argument("--model", required=True)
    common.add_argument("--data", default=rel(os.path.join(SHARED, "data", "imdb")))
    common.add_argument("--subset", type=float, default=0.25)
    common.add_argument("--max-len", type=int, default=128)
    common.add_argument("--batch", type=int, default=32)
    common.add_argument("--seed", type=int, default=42)
    common.add_argument("--threads", type=int, default=os.cpu_count())
    common.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                        help="train: tensorplug's --precision (the peer's too unless --peer-precision)")
    common.add_argument("--pairs", type=int, default=3)
    common.add_argument("--min-ratio", type=float, default=1.5,
                        help="fail below this median ratio (0: report only) [1.5]")
    common.add_argument("--skip-hf", action="store_true", help="tensorplug only: no comparison")
    common.add_argument("--build", default="build-release", help="build folder [build-release]")
    common.add_argument("--results-dir", default=os.path.join("docs", "results"))
    common.add_argument("--omp-wait-policy", default="PASSIVE")
    t = sub.add_parser("train", parents=[common])
    t.add_argument("--init", choices=["pretrained", "random"], default="pretrained")
    t.add_argument("--vocab", help="tensorplug --vocab (random init from a preset)")
    t.add_argument("--hf-model", help="the peer's --model when it differs (a config folder)")
    t.add_argument("--hf-tokenizer", help="the peer's --tokenizer folder")
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--peer-precision", action="append", choices=["f32", "bf16"],
                   help="peer rows (repeatable) [tensorplug's precision]")
    t.add_argument("--compile", action="store_true", help="also a torch.compile peer row")
    e = sub.add_parser("eval", parents=[common])
    e.add_argument("--variants", default="f32,int8", help="ONNX Runtime variants [f32,int8]")
    e.add_argument("--precisions", default="f32",
                   help="tensorplug's --precision for each of its runs in a pair: f32, bf16, i8 [f32]")
    e.add_argument("--check-precision", default="f32",
                   help="the tensorplug run the --min-ratio check against ort-f32 uses [f32]")
    e.add_argument("--accuracy-tol", type=float, default=0.01,
                   help="each further precision's accuracy within this of the first's [0.01]")
    c = sub.add_parser("accuracy", help="compare the test accuracy of two train results")
    c.add_argument("--name", required=True)
    c.add_argument("--a", required=True, help="result name (RESULTS_DIR/A.json)")
    c.add_argument("--b", required=True)
    c.add_argument("--tol", type=float, default=0.01)
    c.add_argument("--results-dir", default=os.path.join("docs", "results"))
    a = ap.parse_args()
    try:
        if a.scenario == "accuracy":
            return scenario_accuracy(a)
        return scenario_train(a) if a.scenario == "train" else scenario_eval(a)
    except Refused as err:
        print(f"compare.py: refused: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
