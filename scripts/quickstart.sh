#!/usr/bin/env bash
# Installs the build dependencies (Debian/Ubuntu, with sudo when not root),
# builds tensorplug, gets IMDB and the bert-base-uncased vocabulary, and runs
# the short real fine-tune of the README: a small BERT from scratch on all of
# IMDB on the CPU, printing the summary block. Extra arguments go to `train`.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

echo "== Installing build dependencies"
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  build-essential meson ninja-build pkg-config ca-certificates curl python3 \
  libglib2.0-dev libjson-glib-dev libopenblas-openmp-dev libdnnl-dev libgtest-dev

echo "== Building"
[ -d build ] || meson setup build -Dbuildtype=release -Dtests=false
ninja -C build

echo "== Data"
data=../shared/data/imdb
[ -d "$data" ] || { scripts/get-imdb.sh data/aclImdb; data=data/aclImdb; }
vocab=../shared/data/bert-base-uncased/vocab.txt
if [ ! -f "$vocab" ]; then
  vocab=data/bert-base-uncased/vocab.txt
  mkdir -p "$(dirname "$vocab")"
  [ -f "$vocab" ] || curl -fL --retry 3 -o "$vocab" \
    https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt
fi

echo "== Fine-tuning a small BERT from scratch on IMDB (CPU)"
exec ./build/cli/tensorplug train --model bert-base-uncased --init random \
  --layers 2 --hidden 128 --heads 2 --ffn 512 --vocab "$vocab" --data "$data" \
  --subset 1.0 --max-len 256 --batch 32 --lr 1e-3 --epochs 2 --backend cpu \
  --out runs/quickstart "$@"
