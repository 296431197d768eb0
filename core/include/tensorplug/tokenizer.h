/* tensorplug/tokenizer.h — BERT-style WordPiece (BERT, DistilBERT, MPNet),
 * identical ids to Hugging Face `tokenizers` reading tokenizer.json
 * (BertNormalizer: clean text, CJK spacing, lowercase, NFD + strip accents;
 * BertPreTokenizer: whitespace and punctuation split; WordPiece with "##",
 * max 100 chars per word; added tokens such as "[CLS]" in the text are
 * matched as tokens, in the raw text or, when "normalized": true like MPNet's
 * "<unk>", in the normalized text; the start and end tokens of the
 * post-processor: [CLS]/[SEP], or <s>/</s> for MPNet).
 * Invalid UTF-8: each invalid byte is replaced by U+FFFD before tokenizing
 * (documented in docs/tokenizer.md). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct tp_tokenizer tp_tokenizer;

/* path: a vocab.txt (one token per line) or a tokenizer.json. */
tp_tokenizer *tp_tokenizer_load(const char *path, GError **err);
void tp_tokenizer_free(tp_tokenizer *tok);

int tp_tokenizer_vocab_size(const tp_tokenizer *tok);
int32_t tp_tokenizer_token_to_id(const tp_tokenizer *tok, const char *token); /* -1 if absent */
const char *tp_tokenizer_id_to_token(const tp_tokenizer *tok, int32_t id);   /* NULL if out of range */
/* The start and end tokens of a sequence: [CLS] and [SEP], or <s> and </s>. */
int32_t tp_tokenizer_cls_id(const tp_tokenizer *tok);
int32_t tp_tokenizer_sep_id(const tp_tokenizer *tok);
/* tokenizer.json's padding.pad_id, else [PAD] (<pad> for MPNet); -1 if none. */
int32_t tp_tokenizer_pad_id(const tp_tokenizer *tok);
int32_t tp_tokenizer_unk_id(const tp_tokenizer *tok);

/* Appends [CLS] ids... [SEP] of text[0..len) to out (a GArray of int32_t).
 * max_len > 0 truncates the sequence (specials included) to max_len tokens,
 * keeping [SEP] last (the first max_len - 2 word pieces are kept; [CLS] and
 * [SEP] are always there, so max_len 1 or 2 gives [CLS] [SEP]); 0 means no
 * limit. Never fails. Returns the number appended. */
int tp_tokenizer_encode(const tp_tokenizer *tok, const char *text, size_t len, int max_len,
                        GArray *out);

/* A batch of encoded sequences in one buffer: sequence i is
 * ids[offsets[i] .. offsets[i+1]). */
typedef struct tp_token_seqs {
  int64_t n;
  int64_t *offsets; /* n + 1 */
  int32_t *ids;
} tp_token_seqs;

/* Encodes texts[i] (NUL-terminated) on `threads` threads (0 = all cores).
 * The result is identical whatever the thread count. */
tp_token_seqs *tp_tokenizer_encode_batch(const tp_tokenizer *tok, const char *const *texts,
                                         int64_t n, int max_len, int threads);
/* Like tp_tokenizer_encode_batch with the byte length of each text given
 * (texts may then hold NUL bytes); lens NULL means NUL-terminated texts. */
tp_token_seqs *tp_tokenizer_encode_batch_len(const tp_tokenizer *tok, const char *const *texts,
                                             const size_t *lens, int64_t n, int max_len,
                                             int threads);
void tp_token_seqs_free(tp_token_seqs *s);

/* Identifies the code that produced token ids: the version and the SHA-256
 * of the tokenizer's sources at build time. Caches of ids are keyed by it. */
const char *tp_tokenizer_code_id(void);

G_END_DECLS
