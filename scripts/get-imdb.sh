#!/usr/bin/env bash
# scripts/get-imdb.sh — download the Stanford Large Movie Review Dataset
# (aclImdb v1.0) and unpack it, for users with internet access.
#
#   scripts/get-imdb.sh [--force] [DEST]     (DEST defaults to data/aclImdb)
#
# The archive is checked against its published SHA-256 before it is unpacked.
# `tensorplug ... --data DEST` then reads DEST/{train,test}/{pos,neg}/*.txt.
set -euo pipefail

URL="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# The SHA-256 of aclImdb_v1.tar.gz that other projects (MLDatasets.jl among
# them) pin for the same URL.
SHA256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

usage() {
  cat <<USAGE
Usage: $0 [--force] [DEST]

Downloads $URL,
checks its SHA-256 and unpacks it so that DEST holds train/ and test/
(DEST defaults to data/aclImdb).

If ../shared/data/imdb exists (the JSONL copy of the same reviews), nothing
is downloaded: pass --data ../shared/data/imdb instead, or --force to
download anyway.

  --force   download even when ../shared/data/imdb exists
  --help    show this help
USAGE
}

force=0
dest=""
for arg in "$@"; do
  case "$arg" in
    --help|-h) usage; exit 0 ;;
    --force) force=1 ;;
    -*) echo "$0: unknown option $arg (see --help)" >&2; exit 2 ;;
    *)
      if [ -n "$dest" ]; then echo "$0: only one DEST may be given (see --help)" >&2; exit 2; fi
      dest="$arg" ;;
  esac
done
dest="${dest:-data/aclImdb}"

# Relative to the repository root, whatever the current folder is.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="$repo_root/../shared/data/imdb"
if [ -d "$shared" ] && [ "$force" -eq 0 ]; then
  echo "IMDB is already here: $(cd "$shared" && pwd) (JSONL, same 50,000 reviews)."
  echo "Use --data $(cd "$shared" && pwd), or run with --force to download anyway."
  exit 0
fi

if [ -d "$dest/train" ] && [ -d "$dest/test" ]; then
  echo "$dest already holds train/ and test/; nothing to do."
  exit 0
fi
if [ -e "$dest" ] && ! rmdir "$dest" 2>/dev/null; then
  # Never delete a user's folder: only an empty one is replaced.
  echo "$0: $dest exists and is not an empty folder; remove it or pick another DEST" >&2
  exit 1
fi

for tool in curl tar sha256sum; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool; install it first" >&2; exit 1; }
done

parent="$(dirname "$dest")"
mkdir -p "$parent"
tmp="$(mktemp -d "$parent/.get-imdb.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

archive="$tmp/aclImdb_v1.tar.gz"
echo "Downloading $URL (about 80 MB)..."
curl --fail --location --retry 5 --retry-delay 3 --retry-connrefused \
     --connect-timeout 30 --progress-bar -o "$archive" "$URL"

echo "Checking SHA-256..."
got="$(sha256sum "$archive" | cut -d' ' -f1)"
if [ "$got" != "$SHA256" ]; then
  echo "$0: SHA-256 mismatch: got $got, expected $SHA256." >&2
  echo "The download is damaged or the file changed upstream; try again." >&2
  exit 1
fi

echo "Unpacking to $dest..."
# The archive holds aclImdb/{train,test}/...; the unlabelled train/unsup and
# the url lists are not needed, so they are left out.
tar -xzf "$archive" -C "$tmp" --exclude='aclImdb/train/unsup' --exclude='*/urls_*.txt'
rm -f "$archive"
mv "$tmp/aclImdb" "$dest"
n=$(find "$dest/train" "$dest/test" -name '*.txt' | wc -l)
echo "Done: $n reviews in $dest (expected 50000). Use --data $dest"
[ "$n" -eq 50000 ] || { echo "$0: expected 50000 review files, found $n" >&2; exit 1; }
