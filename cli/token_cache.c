/* cli/token_cache.c — token ids of a dataset, cached between runs in
 * $TENSORPLUG_CACHE_DIR (else $XDG_CACHE_HOME/tensorplug).
 *
 * A cache file is never trusted: its name is a key, and its header records
 * what it was made from — the tokenizer's code (tp_tokenizer_code_id), the
 * vocabulary file's SHA-256, the SHA-256 of every text, max_len, the
 * vocabulary size — and the SHA-256 of its contents. On reading, all of these
 * must match, the offsets must start at 0, never decrease, respect max_len and
 * end at the id count, and every id must be a row of the vocabulary; anything
 * else is reported on stderr and the texts are tokenized again (and the file
 * rewritten). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/error.h"
#include "tensorplug/fileio.h"

#define CACHE_MAGIC "TPTOKv2\n"
#define SHA_LEN 32

/* Little-endian on disk, as the host (tensorplug refuses big-endian hosts). */
typedef struct cache_header {
  char magic[8];
  char code_id[96];             /* tp_tokenizer_code_id(), NUL-padded */
  guint8 vocab_sha[SHA_LEN];    /* of the vocabulary file's bytes */
  guint8 texts_sha[SHA_LEN];    /* of n and every text (with its NUL) */
  gint64 n, total;              /* texts, ids */
  gint32 vocab_size, max_len;
  guint8 payload_sha[SHA_LEN];  /* of offsets[n + 1] then ids[total] */
} cache_header;

typedef struct cache_key {
  cache_header h; /* every field but total and payload_sha */
  char name[80];  /* tokens-<hex>.bin */
} cache_key;

static char *cache_dir(void) {
  const char *e = g_getenv("TENSORPLUG_CACHE_DIR");
  if (e && *e) return g_strdup(e);
  return g_build_filename(g_get_user_cache_dir(), "tensorplug", NULL);
}

static void sha256(GChecksum *c, guint8 out[SHA_LEN]) {
  gsize len = SHA_LEN;
  g_checksum_get_digest(c, out, &len);
}

static bool make_key(const tp_tokenizer *tok, const char *vocab_path, char *const *texts, guint n,
                     int max_len, cache_key *k, GError **err) {
  memset(k, 0, sizeof *k);
  memcpy(k->h.magic, CACHE_MAGIC, 8);
  g_strlcpy(k->h.code_id, tp_tokenizer_code_id(), sizeof k->h.code_id);
  char *vocab = NULL;
  gsize vlen = 0;
  if (!g_file_get_contents(vocab_path, &vocab, &vlen, err)) return false;
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(c, (guchar *)vocab, vlen);
  sha256(c, k->h.vocab_sha);
  g_free(vocab);
  g_checksum_reset(c);
  gint64 n64 = n;
  g_checksum_update(c, (guchar *)&n64, sizeof n64);
  for (guint i = 0; i < n; i++) g_checksum_update(c, (guchar *)texts[i], (gssize)strlen(texts[i]) + 1);
  sha256(c, k->h.texts_sha);
  k->h.n = n;
  k->h.vocab_size = tp_tokenizer_vocab_size(tok);
  k->h.max_len = max_len;
  /* the file name: everything the ids depend on */
  g_checksum_reset(c);
  g_checksum_update(c, (guchar *)&k->h, offsetof(cache_header, total));
  g_checksum_update(c, (guchar *)&k->h.vocab_size, sizeof k->h.vocab_size * 2);
  g_snprintf(k->name, sizeof k->name, "tokens-%s.bin", g_checksum_get_string(c));
  g_checksum_free(c);
  return true;
}

/* The ids of the cache at path, or NULL with *why set when it is absent or
 * does not hold exactly what key describes. */
static tp_token_seqs *cache_read(const char *path, const cache_key *key, char **why) {
  GError *e = NULL;
  GMappedFile *f = g_mapped_file_new(path, FALSE, &e);
  if (!f) {
    *why = g_error_matches(e, G_FILE_ERROR, G_FILE_ERROR_NOENT) ? NULL : g_strdup(e->message);
    g_error_free(e);
    return NULL;
  }
  const char *d = g_mapped_file_get_contents(f);
  gsize len = g_mapped_file_get_length(f);
  cache_header h;
  tp_token_seqs *s = NULL;
#define BAD(...) (*why = g_strdup_printf(__VA_ARGS__))
  if (len < sizeof h) {
    BAD("%zu bytes, shorter than its header", (size_t)len);
    goto out;
  }
  memcpy(&h, d, sizeof h);
  if (memcmp(h.magic, CACHE_MAGIC, 8) != 0) {
    BAD("not a tensorplug token cache of this version");
  } else if (memcmp(h.code_id, key->h.code_id, sizeof h.code_id) != 0) {
    BAD("written by another tokenizer build");
  } else if (memcmp(h.vocab_sha, key->h.vocab_sha, SHA_LEN) != 0 ||
             h.vocab_size != key->h.vocab_size) {
    BAD("made with another vocabulary");
  } else if (memcmp(h.texts_sha, key->h.texts_sha, SHA_LEN) != 0 || h.n != key->h.n) {
    BAD("made from other texts");
  } else if (h.max_len != key->h.max_len) {
    BAD("made with max_len %d, not %d", h.max_len, key->h.max_len);
  } else if (h.total < 0 || h.total > (gint64)(len / sizeof(gint32)) ||
             len != sizeof h + (gsize)(h.n + 1) * sizeof(gint64) + (gsize)h.total * sizeof(gint32)) {
    BAD("%zu bytes, but its header describes %lld texts and %lld ids", (size_t)len,
        (long long)h.n, (long long)h.total);
  }
  if (*why) goto out;
  const char *payload = d + sizeof h;
  gsize payload_len = len - sizeof h;
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(c, (const guchar *)payload, payload_len);
  guint8 sum[SHA_LEN];
  sha256(c, sum);
  g_checksum_free(c);
  if (memcmp(sum, h.payload_sha, SHA_LEN) != 0) {
    BAD("its contents do not match their checksum");
    goto out;
  }
  s = g_new0(tp_token_seqs, 1);
  s->n = h.n;
  s->offsets = g_new(int64_t, h.n + 1);
  memcpy(s->offsets, payload, (gsize)(h.n + 1) * sizeof(int64_t));
  s->ids = g_new(int32_t, h.total + 1);
  memcpy(s->ids, payload + (h.n + 1) * sizeof(int64_t), (gsize)h.total * sizeof(int32_t));
  /* what the checksum cannot promise: that whoever wrote it wrote sense */
  if (s->offsets[0] != 0 || s->offsets[h.n] != h.total) {
    BAD("its offsets do not run from 0 to its %lld ids", (long long)h.total);
  }
  for (gint64 i = 0; !*why && i < h.n; i++) {
    gint64 l = s->offsets[i + 1] - s->offsets[i];
    if (l < 0 || l > h.max_len || s->offsets[i + 1] > h.total)
      BAD("the offsets of text %lld are out of order or longer than max_len", (long long)i);
  }
  for (gint64 i = 0; !*why && i < h.total; i++)
    if (s->ids[i] < 0 || s->ids[i] >= h.vocab_size)
      BAD("id %d at %lld is outside the vocabulary of %d", s->ids[i], (long long)i, h.vocab_size);
#undef BAD
out:
  if (*why && s) g_clear_pointer(&s, tp_token_seqs_free);
  g_mapped_file_unref(f);
  return s;
}

typedef struct cache_job {
  const cache_header *h;
  const tp_token_seqs *s;
} cache_job;

static bool write_cache(int fd, void *user) {
  const cache_job *j = user;
  return tp_fd_write_all(fd, j->h, sizeof *j->h) &&
         tp_fd_write_all(fd, j->s->offsets, (size_t)(j->s->n + 1) * sizeof(int64_t)) &&
         tp_fd_write_all(fd, j->s->ids, (size_t)j->s->offsets[j->s->n] * sizeof(int32_t));
}

static void cache_write(const char *path, const cache_key *key, const tp_token_seqs *s) {
  cache_header h = key->h;
  h.total = s->offsets[s->n];
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(c, (const guchar *)s->offsets, (gssize)((s->n + 1) * sizeof(int64_t)));
  g_checksum_update(c, (const guchar *)s->ids, (gssize)(h.total * sizeof(int32_t)));
  sha256(c, h.payload_sha);
  g_checksum_free(c);
  cache_job j = {&h, s};
  GError *e = NULL;
  /* a cache is an optimisation: failing to write it is only worth a note */
  if (!tp_file_write_durable_with(path, write_cache, &j, &e)) {
    fprintf(stderr, "tensorplug: note: the token cache was not written: %s\n", e->message);
    g_error_free(e);
  }
}

tp_token_seqs *tp_cli_tokenize_cached(const tp_tokenizer *tok, const char *vocab_path,
                                      char *const *texts, guint n, int max_len, int threads,
                                      bool *cached, GError **err) {
  cache_key key;
  if (!make_key(tok, vocab_path, texts, n, max_len, &key, err)) return NULL;
  char *dir = cache_dir();
  char *path = g_build_filename(dir, key.name, NULL);
  char *why = NULL;
  tp_token_seqs *s = cache_read(path, &key, &why);
  if (why)
    fprintf(stderr, "tensorplug: warning: ignoring the token cache %s (%s); tokenizing again\n",
            path, why);
  *cached = s != NULL;
  if (!s) {
    s = tp_tokenizer_encode_batch(tok, (const char *const *)texts, n, max_len, threads);
    if (g_mkdir_with_parents(dir, 0755) == 0) cache_write(path, &key, s);
  }
  g_free(why);
  g_free(dir);
  g_free(path);
  return s;
}
