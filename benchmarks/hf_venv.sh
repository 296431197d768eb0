#!/bin/sh
# benchmarks/hf_venv.sh — make sure the Hugging Face virtualenv exists and print
# its python. Used by minilm_numerics.sh and minilm_recipe_a.sh.
#
# The venv (.venv-hf at the repository root, or $TP_HF_VENV) is created from
# Debian's /usr/bin/python3 with --system-site-packages so that Debian's
# python3-torch (torch 1.13) is used: PyPI's torch wheels are multi-GB CUDA
# builds. transformers 4.46.3 is the pinned version: it runs on torch 1.13
# (eager attention; SDPA needs torch >= 2.1.1); later 4.4x/5.x releases require
# torch >= 2. Needs PyPI access the first time only.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${TP_HF_VENV:-$here/.venv-hf}
sys_python=${TP_TORCH_PYTHON:-/usr/bin/python3}
transformers_req=${TP_TRANSFORMERS:-transformers==4.46.3}
if ! "$venv/bin/python" -c 'import torch, transformers, tokenizers, safetensors' >/dev/null 2>&1; then
  "$sys_python" -c 'import torch' 2>/dev/null || {
    echo "hf_venv.sh: error: $sys_python has no torch: apt-get install -y python3-torch python3-venv" >&2
    exit 1
  }
  echo "hf_venv.sh: creating $venv (system torch + $transformers_req from PyPI)" >&2
  [ -x "$venv/bin/python" ] || "$sys_python" -m venv --system-site-packages "$venv" >&2
  # transformers' torch extra is deliberately not requested: it would pull a CUDA torch.
  "$venv/bin/python" -m pip install --quiet "$transformers_req" "safetensors" >&2
  "$venv/bin/python" -c 'import torch, transformers; print("hf_venv.sh: torch", torch.__version__, "transformers", transformers.__version__)' >&2
fi
echo "$venv/bin/python"
