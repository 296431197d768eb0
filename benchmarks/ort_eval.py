#!/usr/bin/env python3
"""The inference peer of `tensorplug eval`: ONNX Runtime on the same reviews.

    .venv-hf/bin/python benchmarks/ort_eval.py --model runs/NAME/model \\
        --ids runs/eval/ids.txt --max-len 256 --threads 2 --variant f32 --out R.json

1. Exports the model folder (Hugging Face format: what `tensorplug train`
   writes to RUN/model) with torch.onnx.export (input_ids, attention_mask ->
   logits; dynamic batch and length), once per folder (cached beside --work);
2. runs ONNX Runtime's transformer optimizer on it (fused attention,
   LayerNorm, GELU and bias: ORT at its best for BERT models), and for
   --variant int8 quantizes it dynamically (QInt8 weights, the VNNI kernels);
3. evaluates the reviews of --ids (record ids of --data, in that order: what
   `tensorplug eval --ids-out` wrote) with the session's every graph
   optimisation on (ORT_ENABLE_ALL), --threads intra-op threads, batches of
   --batch reviews sorted by length (as tensorplug evaluates), padded to their
   longest;
4. prints and writes accuracy, reviews/s and tokens/s of the inference loop
   (tokenizing excluded, as in tensorplug's figure), the ORT version and
   options, the CPU and the load averages.
"""
import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_finetune import cpu_model, default_data, load_avg, load_records, read_ids  # noqa: E402


def export(model_dir, onnx_path, num_heads, hidden):
    import torch
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    model.eval()
    x = torch.ones((2, 16), dtype=torch.long)
    m = torch.ones((2, 16), dtype=torch.long)

    class Wrap(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    raw = onnx_path + ".raw.onnx"
    torch.onnx.export(Wrap(model), (x, m), raw, input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
    from onnxruntime.transformers import optimizer
    opt = optimizer.optimize_model(raw, model_type="bert", num_heads=num_heads, hidden_size=hidden)
    opt.save_model_to_file(onnx_path)
    os.remove(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model folder (RUN/model)")
    ap.add_argument("--ids", required=True, help="record ids to evaluate, one a line")
    ap.add_argument("--data", action="append", help="dataset [$TP_SHARED_DIR/data/imdb]")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--variant", choices=["f32", "int8"], default="f32")
    ap.add_argument("--work", default="runs/ort", help="folder for the exported models [runs/ort]")
    ap.add_argument("--run-id", default="")
    ap.add_argument("--out", help="results JSON path")
    a = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(a.model)
    os.makedirs(a.work, exist_ok=True)
    base = os.path.join(a.work, os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(a.model)))))
    f32_path = base + ".f32.onnx"
    stamp = os.path.getmtime(os.path.join(a.model, "model.safetensors"))
    if not os.path.exists(f32_path) or os.path.getmtime(f32_path) < stamp:
        export(a.model, f32_path, cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_heads,
               cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.dim)
    path = f32_path
    if a.variant == "int8":
        path = base + ".int8.onnx"
        if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(f32_path):
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic
            # the fused graph's contrib ops defeat shape inference: give the default type
            quantize_dynamic(f32_path, path, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    recs = load_records(a.data or [default_data()])
    ids = read_ids(a.ids)
    tok = AutoTokenizer.from_pretrained(a.model)
    enc = tok([recs[i][0] for i in ids], truncation=True, max_length=a.max_len)["input_ids"]
    labels = [recs[i][1] for i in ids]
    order = sorted(range(len(ids)), key=lambda k: len(enc[k]))
    pad = tok.pad_token_id
    batches = []
    for s in range(0, len(order), a.batch):
        ks = order[s:s + a.batch]
        L = max(len(enc[k]) for k in ks)
        x = np.full((len(ks), L), pad, dtype=np.int64)
        m = np.zeros((len(ks), L), dtype=np.int64)
        for r, k in enumerate(ks):
            x[r, :len(enc[k])] = enc[k]
            m[r, :len(enc[k])] = 1
        batches.append((ks, x, m))
    load_start = load_avg()
    correct, tokens = 0, 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for ks, x, m in batches:
        logits = sess.run(["logits"], {"input_ids": x, "attention_mask": m})[0]
        pred = logits.argmax(-1)
        correct += sum(int(pred[r] == labels[k]) for r, k in enumerate(ks))
        tokens += int(m.sum())
    secs = time.perf_counter() - t0
    cpu_secs = time.process_time() - c0
    n = len(ids)
    res = {"framework": "onnxruntime", "onnxruntime": ort.__version__, "variant": a.variant,
           "graph_optimization": "ORT_ENABLE_ALL + onnxruntime.transformers.optimizer (bert)",
           "run_id": a.run_id, "command": sys.argv, "threads": a.threads, "cpu": cpu_model(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "load_avg_start": load_start, "load_avg_end": load_avg(),
           "settings": {"max_len": a.max_len, "batch": a.batch, "threads": a.threads,
                        "variant": a.variant, "n": n},
           "n": n, "accuracy": correct / n, "tokens": tokens, "seconds": secs, "cpu_seconds": cpu_secs,
           "reviews_per_s": n / secs, "tokens_per_s": tokens / secs,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    print(f"onnxruntime {ort.__version__} {a.variant}: {n} reviews in {secs:.1f} s ({cpu_secs:.1f} s CPU): "
          f"{n / secs:.1f} reviews/s, {tokens / secs:.0f} tokens/s, accuracy {correct / n:.4f}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
