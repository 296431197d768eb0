/* cli/run_results.c — see run_results.h. */
#include "run_results.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/error.h"

char *tp_format_double(double v) {
  if (!isfinite(v)) return g_strdup(isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
  for (int prec = 6; prec <= 17; prec++) {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    char fmt[8];
    g_snprintf(fmt, sizeof fmt, "%%.%dg", prec);
    g_ascii_formatd(buf, sizeof buf, fmt, v);
    if (g_ascii_strtod(buf, NULL) == v) return g_strdup(buf);
  }
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup(g_ascii_dtostr(buf, sizeof buf, v));
}

static double num(JsonObject *o, const char *k) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n)) return NAN;
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_INT64 || t == G_TYPE_DOUBLE) return json_node_get_double(n);
  return NAN;
}

static char *str(JsonObject *o, const char *k) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) return NULL;
  return g_strdup(json_node_get_string(n));
}

static JsonObject *obj(JsonObject *o, const char *k) {
  JsonNode *n = o ? json_object_get_member(o, k) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

char *tp_run_config_text(const tp_run_result *r, const char *key) {
  JsonObject *c = json_node_get_object(r->config);
  JsonNode *n = json_object_get_member(c, key);
  if (!n || JSON_NODE_HOLDS_NULL(n)) return NULL;
  if (JSON_NODE_HOLDS_ARRAY(n)) {
    JsonArray *a = json_node_get_array(n);
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < json_array_get_length(a); i++) {
      JsonNode *e = json_array_get_element(a, i);
      if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) continue;
      g_string_append_printf(s, "%s%s", s->len ? ", " : "", json_node_get_string(e));
    }
    return g_string_free(s, FALSE);
  }
  if (!JSON_NODE_HOLDS_VALUE(n)) return NULL;
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_STRING) return g_strdup(json_node_get_string(n));
  if (t == G_TYPE_INT64) return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
  if (t == G_TYPE_DOUBLE) return tp_format_double(json_node_get_double(n));
  if (t == G_TYPE_BOOLEAN) return g_strdup(json_node_get_boolean(n) ? "true" : "false");
  return NULL;
}

/* "all-MiniLM-L6-v2", "bert L1 H32 random" */
static char *display_model(JsonObject *cfg) {
  char *m = str(cfg, "model");
  char *base = m ? g_path_get_basename(m) : g_strdup("?");
  GString *s = g_string_new(base);
  double layers = num(cfg, "layers"), hidden = num(cfg, "hidden");
  if (layers > 0) g_string_append_printf(s, " L%.0f", layers);
  if (hidden > 0) g_string_append_printf(s, " H%.0f", hidden);
  char *init = str(cfg, "init");
  if (init && strcmp(init, "random") == 0) g_string_append(s, " random");
  g_free(init);
  g_free(base);
  g_free(m);
  return g_string_free(s, FALSE);
}

static void split_hash(JsonObject *sp, char out[13]) {
  GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
  static const char *const keys[] = {"train_sha256", "val_sha256", "test_sha256"};
  for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
    char *h = str(sp, keys[i]);
    g_checksum_update(c, (const guchar *)(h ? h : "-"), -1);
    g_checksum_update(c, (const guchar *)"\n", 1);
    g_free(h);
  }
  g_strlcpy(out, g_checksum_get_string(c), 13);
  g_checksum_free(c);
}

/* Sweep facts about the run from its parent folder's sweep.json. */
static void read_sweep_info(tp_run_result *r) {
  char *parent = g_path_get_dirname(r->dir);
  char *sp = g_build_filename(parent, "sweep.json", NULL);
  JsonParser *p = json_parser_new();
  if (g_file_test(sp, G_FILE_TEST_IS_REGULAR) && json_parser_load_from_file(p, sp, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    r->sweep = str(o, "name");
    r->study = str(o, "study");
    JsonNode *rn = json_object_get_member(o, "runs");
    JsonArray *runs = rn && JSON_NODE_HOLDS_ARRAY(rn) ? json_node_get_array(rn) : NULL;
    for (guint i = 0; runs && i < json_array_get_length(runs); i++) {
      JsonNode *e = json_array_get_element(runs, i);
      JsonObject *ro = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
      char *name = str(ro, "name");
      if (name && strcmp(name, r->name) == 0) {
        double idx = num(ro, "index");
        r->index = isfinite(idx) ? (int)idx : -1;
        JsonNode *oom = json_object_get_member(ro, "oom");
        JsonArray *oa = oom && JSON_NODE_HOLDS_ARRAY(oom) ? json_node_get_array(oom) : NULL;
        if (oa && json_array_get_length(oa) > 0) {
          JsonNode *first = json_array_get_element(oa, 0);
          double b0 = JSON_NODE_HOLDS_OBJECT(first) ? num(json_node_get_object(first), "batch") : NAN;
          r->note = g_strdup_printf("out of memory at batch %.0f: ran with batch %d", b0, r->batch);
        }
      }
      g_free(name);
    }
  }
  g_object_unref(p);
  g_free(sp);
  g_free(parent);
}

tp_run_result *tp_run_result_load(const char *dir, GError **err) {
  char *path = g_build_filename(dir, "results.json", NULL);
  JsonParser *p = json_parser_new();
  tp_run_result *r = NULL;
  if (!json_parser_load_from_file(p, path, err)) {
    g_prefix_error(err, "%s: ", path);
    goto out;
  }
  JsonNode *root = json_parser_get_root(p);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonObject *cfg = obj(o, "config"), *sp = obj(o, "split"), *test = obj(o, "test");
  JsonNode *hn = o ? json_object_get_member(o, "history") : NULL;
  if (!cfg || !sp || !test || !hn || !JSON_NODE_HOLDS_ARRAY(hn)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s lacks \"config\", \"split\", \"test\" or "
                "\"history\": is it a tensorplug train results.json?", path);
    goto out;
  }
  r = g_new0(tp_run_result, 1);
  r->dir = g_strdup(dir);
  r->name = g_path_get_basename(dir);
  r->index = -1;
  r->config = json_node_copy(json_object_get_member(o, "config"));
  r->model = display_model(cfg);
  r->max_len = (int)num(cfg, "max_len");
  r->batch = (int)num(cfg, "batch");
  r->lr = num(cfg, "lr");
  r->subset = num(cfg, "subset");
  r->n_train = (int64_t)num(sp, "train");
  r->n_val = (int64_t)num(sp, "val");
  r->n_test = (int64_t)num(sp, "test");
  split_hash(sp, r->split_hash);
  r->best_epoch = (int)num(o, "best_epoch");
  r->val_acc_best = num(o, "val_acc_best");
  r->val_loss_best = num(o, "val_loss_best");
  r->test_acc = num(test, "accuracy");
  r->test_f1 = num(test, "f1");
  r->total_s = num(o, "elapsed_s");
  r->backend = str(o, "backend");
  r->device = str(o, "device");
  r->commit = str(o, "commit");
  r->val_loss = g_array_new(FALSE, FALSE, sizeof(double));
  r->val_acc = g_array_new(FALSE, FALSE, sizeof(double));
  JsonArray *h = json_node_get_array(hn);
  guint n = json_array_get_length(h);
  for (guint i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element(h, i);
    JsonObject *eo = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
    double vl = num(eo, "val_loss"), va = num(eo, "val_acc"), sec = num(eo, "seconds");
    g_array_append_val(r->val_loss, vl);
    g_array_append_val(r->val_acc, va);
    r->train_s += isfinite(sec) ? sec : 0;
  }
  r->s_per_epoch = n ? r->train_s / n : NAN;
  read_sweep_info(r);
  double resumed = num(o, "resumed_after_epoch");
  if (!r->note && isfinite(resumed) && resumed > 0)
    r->note = g_strdup_printf("resumed after epoch %.0f: total time counts the last process "
                              "only", resumed);
out:
  g_object_unref(p);
  g_free(path);
  return r;
}

void tp_run_result_free(tp_run_result *r) {
  if (!r) return;
  g_free(r->dir);
  g_free(r->name);
  g_free(r->sweep);
  g_free(r->study);
  g_free(r->note);
  if (r->config) json_node_unref(r->config);
  g_free(r->model);
  g_free(r->backend);
  g_free(r->device);
  g_free(r->commit);
  if (r->val_loss) g_array_unref(r->val_loss);
  if (r->val_acc) g_array_unref(r->val_acc);
  g_free(r);
}

/* Folders a run holds that never hold runs. */
static bool skip_dir(const char *name) {
  static const char *const skip[] = {"model", "checkpoint", "split", "plots", "attempts",
                                     "model.tmp", "model.old", "checkpoint.tmp", "checkpoint.old"};
  for (size_t i = 0; i < G_N_ELEMENTS(skip); i++)
    if (strcmp(name, skip[i]) == 0) return true;
  return name[0] == '.';
}

static bool scan(const char *dir, GPtrArray *out, int depth, GError **err) {
  char *rp = g_build_filename(dir, "results.json", NULL);
  bool is_run = g_file_test(rp, G_FILE_TEST_IS_REGULAR);
  g_free(rp);
  if (is_run) {
    tp_run_result *r = tp_run_result_load(dir, err);
    if (!r) return false;
    g_ptr_array_add(out, r);
    return true;
  }
  if (depth > 8) return true;
  GDir *d = g_dir_open(dir, 0, err);
  if (!d) return false;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;
  while ((n = g_dir_read_name(d))) g_ptr_array_add(names, g_strdup(n));
  g_dir_close(d);
  bool ok = true;
  for (guint i = 0; ok && i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    char *sub = g_build_filename(dir, name, NULL);
    if (!skip_dir(name) && g_file_test(sub, G_FILE_TEST_IS_DIR)) ok = scan(sub, out, depth + 1, err);
    g_free(sub);
  }
  g_ptr_array_unref(names);
  return ok;
}

static int by_sweep_index(gconstpointer a, gconstpointer b) {
  const tp_run_result *x = *(tp_run_result *const *)a, *y = *(tp_run_result *const *)b;
  int c = g_strcmp0(x->sweep, y->sweep);
  if (c) return c;
  if (x->index != y->index) return x->index < y->index ? -1 : 1;
  c = strcmp(x->name, y->name);
  return c ? c : strcmp(x->dir, y->dir);
}

GPtrArray *tp_run_results_find(const char *const *dirs, GError **err) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)tp_run_result_free);
  for (const char *const *d = dirs; *d; d++) {
    if (!g_file_test(*d, G_FILE_TEST_IS_DIR)) {
      g_set_error(err, TP_ERROR, TP_ERROR_IO, "%s: no such folder", *d);
      g_ptr_array_unref(out);
      return NULL;
    }
    if (!scan(*d, out, 0, err)) {
      g_ptr_array_unref(out);
      return NULL;
    }
  }
  g_ptr_array_sort(out, by_sweep_index);
  return out;
}
