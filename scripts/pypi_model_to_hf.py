#!/usr/bin/python3
"""Convert a PyTorch checkpoint (pytorch_model.bin) to model.safetensors.

Usage: pypi_model_to_hf.py IN/pytorch_model.bin OUT/model.safetensors

Run it with an interpreter that has torch (Debian: /usr/bin/python3 with
python3-torch). The checkpoint is loaded with torch.load(weights_only=True),
which refuses arbitrary pickled objects: tensorplug never unpickles in C, and
this script does not run code from the checkpoint either.

The output is written without the `safetensors` package: 8-byte little-endian
header length, JSON header padded with spaces to a multiple of 8, then the
tensors back to back in key order. Keys are kept as in the checkpoint (Hugging
Face names); tied/shared tensors are written once per key. The file is written
to a temporary name in the same folder and renamed, so a failure never leaves
a half-written model.safetensors behind.
"""
import argparse
import json
import os
import struct
import sys

DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint8": "U8", "bool": "BOOL",
}


def die(msg):
    print(f"pypi_model_to_hf.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def load_state_dict(path):
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:
        die(f"this torch ({torch.__version__}) has no torch.load(weights_only=True); "
            "refusing to unpickle an untrusted checkpoint: use torch >= 1.13")
    except Exception as e:  # the message names what the safe unpickler refused
        die(f"cannot load {path} as a plain tensor checkpoint: {e}")
    # Some checkpoints nest the weights one level down.
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        die(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def tensor_bytes(t):
    import torch
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; same bytes
    return t.numpy().tobytes()


def convert(src, dst):
    import torch
    sd = load_state_dict(src)
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            die(f"{src}: entry {name!r} is a {type(t).__name__}, not a tensor")
        dtype = DTYPES.get(str(t.dtype).replace("torch.", ""))
        if dtype is None:
            die(f"{src}: tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        data = tensor_bytes(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(blobs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="pytorch_model.bin")
    ap.add_argument("dst", help="model.safetensors to write")
    args = ap.parse_args()
    if not os.path.isfile(args.src):
        die(f"{args.src}: no such file")
    try:
        import torch  # noqa: F401
    except ImportError:
        die(f"{sys.executable} cannot import torch: run with /usr/bin/python3 "
            "after apt-get install python3-torch")
    n = convert(args.src, args.dst)
    print(f"wrote {args.dst}: {n} tensors")


if __name__ == "__main__":
    main()
