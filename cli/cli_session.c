/* cli/cli_session.c — model/backend options and setup shared by train, eval,
 * predict and bench; the token cache; the progress display. */
#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tensorplug/error.h"

void tp_cli_model_opts_init(tp_cli_model_opts *o) { memset(o, 0, sizeof *o); }

void tp_cli_run_opts_init(tp_cli_run_opts *o) {
  memset(o, 0, sizeof *o);
  o->device = -1;
}

void tp_cli_model_opts_clear(tp_cli_model_opts *o) {
  g_free(o->model);
  g_free(o->weights);
  g_free(o->init);
  g_free(o->vocab);
  memset(o, 0, sizeof *o);
}

void tp_cli_run_opts_clear(tp_cli_run_opts *o) {
  g_free(o->backend);
  g_free(o->precision);
  memset(o, 0, sizeof *o);
}

GOptionGroup *tp_cli_model_group(tp_cli_model_opts *o) {
  GOptionEntry e[] = {
      {"model", 0, 0, G_OPTION_ARG_STRING, &o->model,
       "Preset (distilbert-base-uncased, distil_bert_base_en_uncased, bert-base-uncased, "
       "bert_base_en_uncased) or a model folder (config.json + model.safetensors)", "NAME|DIR"},
      {"weights", 0, 0, G_OPTION_ARG_FILENAME, &o->weights,
       "Load weights from DIR/model.safetensors (a Hugging Face model folder)", "DIR"},
      {"init", 0, 0, G_OPTION_ARG_STRING, &o->init,
       "\"random\": initialise every weight randomly instead of loading any", "random"},
      {"vocab", 0, 0, G_OPTION_ARG_FILENAME, &o->vocab,
       "vocab.txt or tokenizer.json (default: the model folder's tokenizer.json, else its vocab.txt)", "FILE"},
      {"layers", 0, 0, G_OPTION_ARG_INT, &o->layers, "Override the number of layers", "N"},
      {"hidden", 0, 0, G_OPTION_ARG_INT, &o->hidden, "Override the hidden size", "N"},
      {"heads", 0, 0, G_OPTION_ARG_INT, &o->heads, "Override the number of attention heads", "N"},
      {"ffn", 0, 0, G_OPTION_ARG_INT, &o->ffn, "Override the feed-forward size", "N"},
      {"max-positions", 0, 0, G_OPTION_ARG_INT, &o->max_positions,
       "Override the number of position embeddings", "N"},
      G_OPTION_ENTRY_NULL};
  GOptionGroup *g = g_option_group_new("model", "Model options:", "Show the model options", NULL, NULL);
  g_option_group_add_entries(g, e);
  return g;
}

GOptionGroup *tp_cli_run_group(tp_cli_run_opts *o) {
  GOptionEntry e[] = {
      {"backend", 0, 0, G_OPTION_ARG_STRING, &o->backend,
       "auto (CUDA, else a Vulkan GPU, else CPU), cpu, cuda or vulkan [auto]", "NAME"},
      {"device", 0, 0, G_OPTION_ARG_INT, &o->device, "Device index within the backend [first]", "N"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &o->threads,
       "Worker threads [$TENSORPLUG_NUM_THREADS, else all cores]", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &o->precision,
       "f32, bf16 or f16 [f32 on the CPU]", "P"},
      G_OPTION_ENTRY_NULL};
  GOptionGroup *g = g_option_group_new("run", "Device options:", "Show the device options", NULL, NULL);
  g_option_group_add_entries(g, e);
  return g;
}

static bool check_run_opts(const tp_cli_run_opts *ro, GError **err) {
  if (ro->threads < 0 || ro->threads > 4096) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--threads %d is out of range (1 to "
                "4096)", ro->threads);
    return false;
  }
  const char *p = ro->precision ? ro->precision : "f32";
  if (strcmp(p, "f32") && strcmp(p, "bf16") && strcmp(p, "f16")) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--precision %s: use f32, bf16 or f16", p);
    return false;
  }
  return true;
}

/* Mixed precision needs a GPU backend's bf16/f16 paths; the CPU computes in f32. */
static bool check_precision(const tp_cli_run_opts *ro, const tp_backend *be, GError **err) {
  const char *p = ro->precision ? ro->precision : "f32";
  if (strcmp(p, "f32") != 0 && strcmp(be->name, "cpu") == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "--precision %s is not available on the "
                "cpu backend (it trains in f32): drop --precision or use a GPU backend", p);
    return false;
  }
  return true;
}

bool tp_cli_session_open(tp_cli_session *s, const tp_cli_model_opts *mo, const tp_cli_run_opts *ro,
                         uint64_t seed, bool need_vocab, GError **err) {
  memset(s, 0, sizeof *s);
  if (!check_run_opts(ro, err)) return false;
  if (mo->init && strcmp(mo->init, "random") != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--init %s: the only choice is "
                "\"random\"", mo->init);
    return false;
  }
  tp_model_source src = {.model = mo->model, .weights_dir = mo->weights,
                         .init_random = mo->init != NULL,
                         .ov = {.layers = mo->layers, .hidden = mo->hidden, .heads = mo->heads,
                                .ffn = mo->ffn, .max_positions = mo->max_positions}};
  if (mo->layers < 0 || mo->hidden < 0 || mo->heads < 0 || mo->ffn < 0 || mo->max_positions < 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "model sizes must be positive");
    return false;
  }
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  if (!tp_model_resolve(NULL, &src, &iface, &cfg, &s->weights_path, &s->model_dir, err))
    return false;
  if (mo->vocab || s->model_dir || need_vocab) {
    s->vocab_path = tp_cli_resolve_vocab(mo->vocab, s->model_dir, err);
    if (!s->vocab_path && need_vocab) return false;
    g_clear_error(err);
  }
  if (s->vocab_path) {
    s->tok = tp_tokenizer_load(s->vocab_path, err);
    if (!s->tok) return false;
    if (tp_tokenizer_vocab_size(s->tok) > cfg.vocab_size) {
      g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "the vocabulary %s has %d tokens "
                  "but the model only %d embeddings: use the model's own vocabulary",
                  s->vocab_path, tp_tokenizer_vocab_size(s->tok), cfg.vocab_size);
      return false;
    }
  }
  s->be = tp_backend_open(NULL, ro->backend ? ro->backend : "auto", ro->device, ro->threads, err);
  if (!s->be || !check_precision(ro, s->be, err)) return false;
  s->ctx = tp_ctx_new(s->be, err);
  if (!s->ctx) return false;
  s->model = tp_model_new(iface, &cfg, s->ctx, seed, err);
  if (!s->model) return false;
  if (s->weights_path &&
      !tp_model_load_weights(s->model, s->ctx, s->weights_path, seed ^ 0x5eedu, &s->load, err))
    return false;
  return true;
}

void tp_cli_session_close(tp_cli_session *s) {
  tp_model_free(s->model);
  if (s->ctx) tp_ctx_free(s->ctx);
  if (s->be) tp_backend_close(s->be);
  if (s->tok) tp_tokenizer_free(s->tok);
  tp_load_report_clear(&s->load);
  g_free(s->vocab_path);
  g_free(s->model_dir);
  g_free(s->weights_path);
  memset(s, 0, sizeof *s);
}

char *tp_cli_thousands(int64_t v) {
  char raw[32];
  g_snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v));
  GString *s = g_string_new(v < 0 ? "-" : "");
  size_t n = strlen(raw);
  for (size_t i = 0; i < n; i++) {
    if (i && (n - i) % 3 == 0) g_string_append_c(s, ',');
    g_string_append_c(s, raw[i]);
  }
  return g_string_free(s, FALSE);
}

char *tp_cli_hms(double sec) {
  long t = (long)llround(sec < 0 ? 0 : sec);
  return g_strdup_printf("%02ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
}

void tp_cli_warn_untrained_head(const tp_cli_session *s) {
  if (!s->weights_path) {
    fprintf(stderr, "tensorplug: warning: the model is randomly initialised (--init random): its "
                    "outputs mean nothing\n");
  } else if (s->load.initialised) {
    fprintf(stderr, "tensorplug: warning: %s has no %s: initialised randomly, so the outputs "
                    "mean nothing until the model is fine-tuned (tensorplug train)\n",
            s->weights_path, s->load.initialised_names->str);
  }
}

char *tp_cli_session_describe(const tp_cli_session *s) {
  const tp_model_config *c = &s->model->cfg;
  char *np = tp_cli_thousands(tp_params_numel(s->model->params));
  GString *d = g_string_new(NULL);
  g_string_append_printf(d, "%s: %d layers, hidden %d, %d heads, FFN %d, %d positions — %s "
                         "parameters; ", c->model_type, c->layers, c->hidden, c->heads, c->ffn,
                         c->max_positions, np);
  if (s->weights_path) {
    g_string_append_printf(d, "weights from %s (%u tensors", s->weights_path, s->load.loaded);
    if (s->load.initialised)
      g_string_append_printf(d, "; initialised, absent from the file: %s",
                             s->load.initialised_names->str);
    if (s->load.ignored)
      g_string_append_printf(d, "; %u unused tensors ignored: %s", s->load.ignored,
                             s->load.ignored_names->str);
    g_string_append(d, ")");
  } else {
    g_string_append(d, "random initialisation");
  }
  g_string_append_printf(d, "; backend %s (%s)", s->be->name, s->be->info.name);
  g_free(np);
  return g_string_free(d, FALSE);
}

bool tp_cli_write_json(const char *path, JsonNode *root, GError **err) {
  JsonGenerator *g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_root(g, root);
  gsize len = 0;
  char *text = json_generator_to_data(g, &len);
  bool ok = g_file_set_contents(path, text, (gssize)len, err);
  g_free(text);
  g_object_unref(g);
  return ok;
}

/* ---- token cache ---- */

#define CACHE_MAGIC "TPTOKv1\n"

static char *cache_dir(void) {
  const char *e = g_getenv("TENSORPLUG_CACHE_DIR");
  if (e && *e) return g_strdup(e);
  return g_build_filename(g_get_user_cache_dir(), "tensorplug", NULL);
}

/* What the tokenizer makes of a vocabulary file; bump it when that changes
 * (2: tokenizer.json post-processors and normalized added tokens, MPNet), so
 * that ids cached by an older tensorplug are not reused. */
#define TOKENIZER_SEMANTICS 2

/* Key: SHA-256 over the vocabulary bytes, the tokenizer's semantics version,
 * max_len and every text. */
static char *cache_key(const char *vocab_path, char *const *texts, guint n, int max_len) {
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  char *vocab = NULL;
  gsize vlen = 0;
  if (g_file_get_contents(vocab_path, &vocab, &vlen, NULL)) g_checksum_update(c, (guchar *)vocab, vlen);
  g_free(vocab);
  char head[96];
  g_snprintf(head, sizeof head, "|tokenizer=%d|max_len=%d|n=%u|", TOKENIZER_SEMANTICS, max_len, n);
  g_checksum_update(c, (guchar *)head, -1);
  for (guint i = 0; i < n; i++) g_checksum_update(c, (guchar *)texts[i], (gssize)strlen(texts[i]) + 1);
  char *k = g_strdup(g_checksum_get_string(c));
  g_checksum_free(c);
  return k;
}

static tp_token_seqs *cache_read(const char *path, guint n) {
  GMappedFile *f = g_mapped_file_new(path, FALSE, NULL);
  if (!f) return NULL;
  const char *d = g_mapped_file_get_contents(f);
  gsize len = g_mapped_file_get_length(f);
  tp_token_seqs *s = NULL;
  size_t head = strlen(CACHE_MAGIC) + sizeof(int64_t);
  int64_t cnt = 0;
  if (len >= head && memcmp(d, CACHE_MAGIC, strlen(CACHE_MAGIC)) == 0) {
    memcpy(&cnt, d + strlen(CACHE_MAGIC), sizeof cnt);
    size_t off_bytes = (size_t)(cnt + 1) * sizeof(int64_t);
    if (cnt == (int64_t)n && len >= head + off_bytes) {
      s = g_new0(tp_token_seqs, 1);
      s->n = cnt;
      s->offsets = g_new(int64_t, cnt + 1);
      memcpy(s->offsets, d + head, off_bytes);
      int64_t total = s->offsets[cnt];
      if (total < 0 || len != head + off_bytes + (size_t)total * sizeof(int32_t)) {
        g_free(s->offsets);
        g_clear_pointer(&s, g_free);
      } else {
        s->ids = g_new(int32_t, total + 1);
        memcpy(s->ids, d + head + off_bytes, (size_t)total * sizeof(int32_t));
      }
    }
  }
  g_mapped_file_unref(f);
  return s;
}

static void cache_write(const char *path, const tp_token_seqs *s) {
  GString *b = g_string_new(CACHE_MAGIC);
  g_string_append_len(b, (const char *)&s->n, sizeof s->n);
  g_string_append_len(b, (const char *)s->offsets, (gssize)((s->n + 1) * sizeof(int64_t)));
  g_string_append_len(b, (const char *)s->ids, (gssize)(s->offsets[s->n] * sizeof(int32_t)));
  /* a cache is an optimisation: failing to write it is not an error */
  g_file_set_contents(path, b->str, (gssize)b->len, NULL);
  g_string_free(b, TRUE);
}

tp_token_seqs *tp_cli_tokenize_cached(const tp_tokenizer *tok, const char *vocab_path,
                                      char *const *texts, guint n, int max_len, int threads,
                                      bool *cached, GError **err) {
  (void)err;
  char *dir = cache_dir();
  char *key = cache_key(vocab_path, texts, n, max_len);
  char *name = g_strdup_printf("tokens-%s.bin", key);
  char *path = g_build_filename(dir, name, NULL);
  tp_token_seqs *s = cache_read(path, n);
  *cached = s != NULL;
  if (!s) {
    s = tp_tokenizer_encode_batch(tok, (const char *const *)texts, n, max_len, threads);
    if (g_mkdir_with_parents(dir, 0755) == 0) cache_write(path, s);
  }
  g_free(dir);
  g_free(key);
  g_free(name);
  g_free(path);
  return s;
}

/* ---- progress ---- */

static void fmt_dur(char *buf, size_t n, double s) {
  long t = (long)(s + 0.5);
  if (t >= 3600) g_snprintf(buf, n, "%ldh %02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) g_snprintf(buf, n, "%ldm %02lds", t / 60, t % 60);
  else g_snprintf(buf, n, "%lds", t);
}

void tp_cli_progress_cb(const tp_progress *p, void *user) {
  tp_cli_progress *pr = user;
  bool train = strcmp(p->phase, "train") == 0;
  if (!train) {
    /* validation/test: a short live counter on a terminal only */
    if (pr->tty) {
      fprintf(stderr, "\r  %s %lld/%lld", p->phase, (long long)p->step, (long long)p->steps);
      if (p->step == p->steps) fprintf(stderr, "\r\033[K");
      fflush(stderr);
    }
    return;
  }
  if (p->epoch != pr->last_epoch) {
    printf("Epoch %d/%d\n", p->epoch, p->epochs);
    fflush(stdout);
    pr->last_epoch = p->epoch;
    pr->last_decile = 0;
  }
  double per = p->step ? p->elapsed_s / (double)p->step : 0;
  char el[32], eta[32];
  fmt_dur(el, sizeof el, p->elapsed_s);
  fmt_dur(eta, sizeof eta, per * (double)(p->steps - p->step));
  int width = (int)log10((double)p->steps) + 1;
  if (p->epoch_done) {
    const tp_epoch_stats *e = p->stats;
    char line[512];
    g_snprintf(line, sizeof line, "%*lld/%lld [==============================] - %s %.0fms/step - "
               "loss: %.4f - acc: %.4f - val_loss: %.4f - val_acc: %.4f - %.0f tokens/s",
               width, (long long)p->steps, (long long)p->steps, el, e->ms_per_step, e->loss,
               e->acc, e->val_loss, e->val_acc, e->tokens_per_s);
    if (pr->tty) printf("\r\033[K%s\n", line);
    else printf("%s\n", line);
    fflush(stdout);
    return;
  }
  if (pr->tty) {
    int filled = (int)(30.0 * (double)p->step / (double)p->steps);
    char bar[32];
    for (int i = 0; i < 30; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : '.');
    bar[30] = 0;
    printf("\r%*lld/%lld [%s] - %s %.0fms/step - loss: %.4f - acc: %.4f - ETA: %s\033[K", width,
           (long long)p->step, (long long)p->steps, bar, el, per * 1000, p->loss, p->acc, eta);
    fflush(stdout);
  } else {
    int decile = (int)(10 * p->step / p->steps);
    if (decile > pr->last_decile && p->step < p->steps) {
      pr->last_decile = decile;
      printf("%*lld/%lld (%d%%) - %s %.0fms/step - loss: %.4f - acc: %.4f - ETA: %s\n", width,
             (long long)p->step, (long long)p->steps, decile * 10, el, per * 1000, p->loss, p->acc,
             eta);
      fflush(stdout);
    }
  }
}
