#!/usr/bin/env python3
"""MPNet tokenizer golden ids, from Hugging Face `tokenizers`, for the texts of
../shared/reference/tokenizer/golden.jsonl.gz (the BERT golden file: 56 tricky
texts and every tenth IMDB training review).

MPNet's vocabulary is <s> <pad> </s> <unk>, then bert-base-uncased's 30,522
tokens, then <mask>. So for most texts MPNet's ids are BERT's shifted by 4,
with <s> (0) and </s> (2) in place of [CLS] and [SEP]. Texts where that is not
so (special tokens written in the text: MPNet reads "<unk>" after
normalization, "[CLS]" as ordinary word pieces, ...) are written out in full:

  OUT (gzip JSON Lines): {"id": ..., "ids": [...]} for each such record only

tests/test_tokenizer.c then checks tensorplug on all 2,556 texts: the ids of
this file where a record has a line, else the shifted BERT golden ids. This
script checks that the shift holds for every other record (it asserts, so a
record it would wrongly leave out cannot pass silently), and prints counts.

Usage (with an interpreter that has `tokenizers`, e.g. .venv-hf/bin/python):
  mpnet_tokenizer_golden.py --tokenizer models/all-mpnet-base-v2/tokenizer.json \\
      --out tests/data/mpnet-tokenizer/golden-delta.jsonl.gz
"""
import argparse
import gzip
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("TP_SHARED_DIR", os.path.join(REPO, "..", "shared"))


def shifted(bert_ids):
    return [0] + [i + 4 for i in bert_ids[1:-1]] + [2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="MPNet tokenizer.json")
    ap.add_argument("--golden", default=os.path.join(SHARED, "reference", "tokenizer",
                                                     "golden.jsonl.gz"))
    ap.add_argument("--imdb", default=os.path.join(SHARED, "data", "imdb", "train.jsonl.gz"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import tokenizers
    tok = tokenizers.Tokenizer.from_file(a.tokenizer)
    tok.no_truncation()
    tok.no_padding()
    with gzip.open(a.imdb, "rt", encoding="utf-8") as f:
        imdb = {r["id"]: r["text"] for r in map(json.loads, f)}
    with gzip.open(a.golden, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    texts = [r["text"] if "text" in r else imdb[r["id"]] for r in records]
    encodings = tok.encode_batch(texts)
    delta = []
    for r, e in zip(records, encodings):
        if e.ids != shifted(r["ids"]):
            delta.append({"id": r["id"], "ids": e.ids})
    with gzip.GzipFile(a.out, "wb", mtime=0) as f:  # mtime 0: the same bytes every run
        for d in delta:
            f.write((json.dumps(d, separators=(",", ":")) + "\n").encode())
    n_tokens = sum(len(e.ids) for e in encodings)
    print(f"{len(records)} texts, {n_tokens} tokens (tokenizers {tokenizers.__version__}); "
          f"{len(delta)} differ from the shifted BERT ids, written to {a.out}: "
          f"{', '.join(d['id'] for d in delta)}")


if __name__ == "__main__":
    main()
