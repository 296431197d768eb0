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
#include "tensorplug/fileio.h"
#include "tensorplug/memory.h"

/* The compute type of matrix products: --precision, else the device's own
 * choice (preferred_compute: the CPU says bf16 only where bf16 arithmetic
 * outruns f32, as with AMX), else bf16 on CUDA (tensor cores) and f32
 * elsewhere. */
static tp_dtype precision_of(const tp_cli_run_opts *ro, const tp_backend *be) {
  const char *p = ro->precision ? ro->precision : "auto";
  if (strcmp(p, "bf16") == 0) return TP_BF16;
  if (strcmp(p, "f16") == 0) return TP_F16;
  if (strcmp(p, "f32") == 0) return TP_F32;
  if (strcmp(p, "i8") == 0) return TP_I8;
  if (TP_IFACE_HAS(be->iface, preferred_compute)) {
    tp_dtype t = be->iface->preferred_compute(be->dev);
    if ((t == TP_F32 || t == TP_BF16) && (be->info.gemm_compute & TP_DTYPE_BIT(t))) return t;
  }
  return strcmp(be->name, "cuda") == 0 ? TP_BF16 : TP_F32;
}

bool tp_cli_session_open(tp_cli_session *s, const tp_cli_model_opts *mo, const tp_cli_run_opts *ro,
                         uint64_t seed, bool need_vocab, GError **err) {
  memset(s, 0, sizeof *s); /* the option values were validated by tp_cli_optset_check */
  tp_model_source src = {.model = mo->model, .weights_dir = mo->weights,
                         .init_random = mo->init != NULL,
                         .ov = {.layers = mo->layers, .hidden = mo->hidden, .heads = mo->heads,
                                .ffn = mo->ffn, .max_positions = mo->max_positions}};
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
    /* batches of texts of different lengths are padded with it */
    if (tp_tokenizer_pad_id(s->tok) < 0) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "the vocabulary %s has no [PAD] token (and "
                  "declares no padding token): a model pads its batches with it; use the "
                  "model's own vocab.txt or tokenizer.json", s->vocab_path);
      return false;
    }
    if (tp_tokenizer_vocab_size(s->tok) > cfg.vocab_size) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "the vocabulary %s has %d tokens "
                  "but the model only %d embeddings: use the model's own vocabulary",
                  s->vocab_path, tp_tokenizer_vocab_size(s->tok), cfg.vocab_size);
      return false;
    }
  }
  s->be = tp_backend_open(NULL, ro->backend ? ro->backend : "auto", ro->device, ro->threads, err);
  if (!s->be) return false;
  if (s->be->info.is_software)
    g_printerr("note: %s device %d (%s) is a CPU implementation of the API: correct but slow\n",
               s->be->name, s->be->device_index, s->be->info.name);
  s->ctx = tp_ctx_new(s->be, err);
  if (!s->ctx || !tp_ctx_set_precision(s->ctx, precision_of(ro, s->be), err)) return false;
  s->model = tp_model_new(iface, &cfg, s->ctx, seed, err);
  if (!s->model) return false;
  if (s->weights_path &&
      !tp_model_load_weights(s->model, s->ctx, s->weights_path, seed ^ 0x5eedu, &s->load, err))
    return false;
  return true;
}

bool tp_cli_check_max_len(const tp_cli_session *s, int *max_len_io, GError **err) {
  int positions = s->model->cfg.max_positions, max_len = *max_len_io;
  if (max_len == 0) *max_len_io = MIN(512, positions);
  if (max_len <= positions) return true;
  g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "--max-len %d is more than the model's "
              "%d positions: use --max-len %d or less", max_len, positions, positions);
  return false;
}

int64_t tp_cli_longest(const tp_token_seqs *seqs) {
  int64_t t = 1;
  for (int64_t i = 0; i < seqs->n; i++) t = MAX(t, seqs->offsets[i + 1] - seqs->offsets[i]);
  return t;
}

bool tp_cli_check_step_memory(const tp_cli_session *s, int64_t batch, int64_t seq, bool training,
                              const char *batch_option, GError **err) {
  uint64_t bytes = tp_model_step_bytes(&s->model->cfg, batch, seq, training,
                                       tp_model_attention_fused(&s->model->cfg, s->be));
  uint64_t avail = tp_memory_device_available(s->be);
  /* the CPU's available memory is read live (the parameters are already in
   * use); a GPU reports its total, from which the parameters are taken */
  if (!s->be->info.host_visible && avail != UINT64_MAX) {
    uint64_t params = (uint64_t)tp_params_flat_floats(s->model->params) * sizeof(float) * 4;
    avail = avail > params ? avail - params : 0;
  }
  if (bytes <= avail) return true;
  char need[32], have[32];
  g_set_error(err, TP_ERROR, TP_ERROR_OUT_OF_MEMORY, "not enough memory: one %s step of %s %lld "
              "x %lld tokens needs about %s (an estimate) but only %s of memory on the %s device "
              "are available: lower %s or --max-len", training ? "training" : "evaluation",
              batch_option, (long long)batch, (long long)seq,
              tp_memory_format(bytes, need, sizeof need), tp_memory_format(avail, have, sizeof have),
              s->be->name, batch_option);
  return false;
}

bool tp_cli_model_num_labels(const tp_cli_model_opts *mo, int *num_labels, GError **err) {
  tp_model_source src = {.model = mo->model, .weights_dir = mo->weights,
                         .init_random = mo->init != NULL};
  const tp_model_iface *iface = NULL;
  tp_model_config cfg;
  char *wp = NULL, *md = NULL;
  bool ok = tp_model_resolve(NULL, &src, &iface, &cfg, &wp, &md, err);
  if (ok) *num_labels = cfg.num_labels;
  g_free(wp);
  g_free(md);
  return ok;
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
  g_string_append_printf(d, "; backend %s (%s), matrix products in %s", s->be->name,
                         s->be->info.name, tp_dtype_name(tp_ctx_precision(s->ctx)));
  g_free(np);
  return g_string_free(d, FALSE);
}

bool tp_cli_write_json(const char *path, JsonNode *root, GError **err) {
  JsonGenerator *g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_root(g, root);
  gsize len = 0;
  char *text = json_generator_to_data(g, &len);
  bool ok = tp_file_write_durable(path, text, len, err);
  g_free(text);
  g_object_unref(g);
  return ok;
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
