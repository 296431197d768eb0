#!/bin/sh
# benchmarks/hf_venv.sh — make sure the peers' virtualenv exists and print its
# python. Used by compare.py, minilm_numerics.sh and minilm_recipe_a.sh.
#
# The venv (.venv-hf at the repository root, or $TP_HF_VENV) holds the newest
# PyTorch and Hugging Face Transformers from PyPI (`pip install torch
# transformers`: about 5.6 GB with the CUDA wheels PyPI's torch depends on),
# ONNX Runtime and the ONNX exporter's packages. Set $TP_HF_PACKAGES to pin
# other versions (e.g. "torch==2.15.0 transformers==5.24.0 ..."). Needs PyPI
# access the first time only.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${TP_HF_VENV:-$here/.venv-hf}
packages=${TP_HF_PACKAGES:-"torch transformers safetensors onnxruntime onnx onnxscript"}
if ! "$venv/bin/python" -c 'import torch, transformers, tokenizers, safetensors, onnxruntime, onnx' >/dev/null 2>&1; then
  echo "hf_venv.sh: creating $venv ($packages from PyPI)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet $packages >&2
  "$venv/bin/python" -c 'import torch, transformers, onnxruntime; print("hf_venv.sh: torch", torch.__version__, "transformers", transformers.__version__, "onnxruntime", onnxruntime.__version__)' >&2
fi
echo "$venv/bin/python"
