/* core/train_state.c — reading a checkpoint's state.json strictly: every
 * field's type, range and consistency is checked, and an error names the
 * file and the field (a corrupt file must never resume from nonsense). */
#include <math.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/train.h"

#define MAX_EPOCHS 1000000
#define DAMAGED "the checkpoint is damaged (start the run again with --overwrite)"

typedef struct reader {
  const char *path;
  GError **err;
  bool ok;
} reader;

static const char *node_kind(JsonNode *n) {
  if (!n) return "nothing";
  switch (json_node_get_node_type(n)) {
  case JSON_NODE_OBJECT: return "an object";
  case JSON_NODE_ARRAY: return "an array";
  case JSON_NODE_NULL: return "null";
  case JSON_NODE_VALUE: break;
  }
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_STRING ? "a string" : t == G_TYPE_BOOLEAN ? "a boolean"
       : t == G_TYPE_INT64 ? "an integer" : "a number";
}

G_GNUC_PRINTF(3, 4)
static void fail(reader *r, const char *field, const char *fmt, ...) {
  if (!r->ok) return;
  va_list ap;
  va_start(ap, fmt);
  char *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(r->err, TP_ERROR, TP_ERROR_FORMAT, "%s: \"%s\" %s; " DAMAGED, r->path, field, what);
  g_free(what);
  r->ok = false;
}

/* An integer in [lo, hi]; absent members are an error. */
static gint64 get_int(reader *r, JsonObject *o, const char *prefix, const char *key, gint64 lo,
                      gint64 hi) {
  if (!r->ok) return 0;
  char *field = g_strconcat(prefix, key, NULL);
  JsonNode *n = json_object_get_member(o, key);
  gint64 v = 0;
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
    fail(r, field, "must be an integer, found %s", n ? node_kind(n) : "no such member");
  else if ((v = json_node_get_int(n)) < lo || v > hi)
    fail(r, field, "= %" G_GINT64_FORMAT " is out of range (%" G_GINT64_FORMAT " to %"
         G_GINT64_FORMAT ")", v, lo, hi);
  g_free(field);
  return v;
}

/* A number, or null (written for a value that was not finite). */
static double get_num(reader *r, JsonObject *o, const char *prefix, const char *key) {
  if (!r->ok) return 0;
  JsonNode *n = json_object_get_member(o, key);
  if (n && JSON_NODE_HOLDS_NULL(n)) return INFINITY;
  if (n && JSON_NODE_HOLDS_VALUE(n) &&
      (json_node_get_value_type(n) == G_TYPE_DOUBLE || json_node_get_value_type(n) == G_TYPE_INT64))
    return json_node_get_double(n);
  char *field = g_strconcat(prefix, key, NULL);
  fail(r, field, "must be a number or null, found %s", n ? node_kind(n) : "no such member");
  g_free(field);
  return 0;
}

static bool get_bool(reader *r, JsonObject *o, const char *key) {
  if (!r->ok) return false;
  JsonNode *n = json_object_get_member(o, key);
  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN)
    return json_node_get_boolean(n);
  fail(r, key, "must be true or false, found %s", n ? node_kind(n) : "no such member");
  return false;
}

static bool parse_root(reader *r, JsonNode *root, tp_train_state *s, JsonNode **extra) {
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(r->err, TP_ERROR, TP_ERROR_FORMAT, "%s: expected a JSON object, found %s; " DAMAGED,
                r->path, node_kind(root));
    return false;
  }
  JsonObject *o = json_node_get_object(root);
  tp_train_state_clear(s);
  tp_train_state_init(s);
  s->epochs_done = (int)get_int(r, o, "", "epochs_done", 0, MAX_EPOCHS);
  s->global_step = get_int(r, o, "", "global_step", s->epochs_done, G_MAXINT64 / 2);
  s->best_val_loss = get_num(r, o, "", "best_val_loss");
  if (r->ok && !(s->best_val_loss >= 0)) fail(r, "best_val_loss", "= %g is negative", s->best_val_loss);
  s->best_epoch = (int)get_int(r, o, "", "best_epoch", s->epochs_done > 0, s->epochs_done);
  s->bad_epochs = (int)get_int(r, o, "", "bad_epochs", 0, s->epochs_done - s->best_epoch);
  s->stopped_early = get_bool(r, o, "stopped_early");
  if (r->ok && s->epochs_done > 0 && !isfinite(s->best_val_loss))
    fail(r, "best_val_loss", "is null although %d epochs are done", s->epochs_done);
  JsonNode *hn = r->ok ? json_object_get_member(o, "history") : NULL;
  if (r->ok && (!hn || !JSON_NODE_HOLDS_ARRAY(hn)))
    fail(r, "history", "must be an array, found %s", hn ? node_kind(hn) : "no such member");
  JsonArray *h = r->ok ? json_node_get_array(hn) : NULL;
  if (r->ok && json_array_get_length(h) != (guint)s->epochs_done)
    fail(r, "history", "has %u entries but epochs_done is %d", json_array_get_length(h),
         s->epochs_done);
  for (guint i = 0; r->ok && i < (guint)s->epochs_done; i++) {
    char prefix[48];
    g_snprintf(prefix, sizeof prefix, "history[%u].", i);
    JsonNode *en = json_array_get_element(h, i);
    if (!JSON_NODE_HOLDS_OBJECT(en)) {
      char field[32];
      g_snprintf(field, sizeof field, "history[%u]", i);
      fail(r, field, "must be an object, found %s", node_kind(en));
      break;
    }
    JsonObject *e = json_node_get_object(en);
    tp_epoch_stats es = {.epoch = (int)get_int(r, e, prefix, "epoch", i + 1, i + 1),
                         .loss = get_num(r, e, prefix, "loss"),
                         .acc = get_num(r, e, prefix, "acc"),
                         .val_loss = get_num(r, e, prefix, "val_loss"),
                         .val_acc = get_num(r, e, prefix, "val_acc"),
                         .seconds = get_num(r, e, prefix, "seconds"),
                         .ms_per_step = get_num(r, e, prefix, "ms_per_step"),
                         .tokens_per_s = get_num(r, e, prefix, "tokens_per_s"),
                         .steps = get_int(r, e, prefix, "steps", 0, G_MAXINT64 / 2),
                         .tokens = get_int(r, e, prefix, "tokens", 0, G_MAXINT64 / 2),
                         .skipped_steps = json_object_has_member(e, "skipped_steps")
                                              ? get_int(r, e, prefix, "skipped_steps", 0,
                                                        G_MAXINT64 / 2)
                                              : 0,
                         /* checkpoints written before it was recorded lack it */
                         .cpu_seconds = json_object_has_member(e, "cpu_seconds")
                                            ? get_num(r, e, prefix, "cpu_seconds")
                                            : 0,
                         /* distributed runs only (time in gradient sums) */
                         .sum_seconds = json_object_has_member(e, "sum_seconds")
                                            ? get_num(r, e, prefix, "sum_seconds")
                                            : 0};
    if (r->ok && !(es.cpu_seconds >= 0 && isfinite(es.cpu_seconds))) {
      char field[48];
      g_snprintf(field, sizeof field, "%scpu_seconds", prefix);
      fail(r, field, "= %g: must be a finite number of seconds, 0 or more", es.cpu_seconds);
    }
    if (r->ok && !(es.sum_seconds >= 0 && isfinite(es.sum_seconds))) {
      char field[48];
      g_snprintf(field, sizeof field, "%ssum_seconds", prefix);
      fail(r, field, "= %g: must be a finite number of seconds, 0 or more", es.sum_seconds);
    }
    g_array_append_val(s->history, es);
  }
  if (r->ok && extra) {
    JsonNode *x = json_object_get_member(o, "extra");
    *extra = x ? json_node_copy(x) : NULL;
  }
  return r->ok;
}

bool tp_train_state_parse(const char *data, gsize len, const char *name, tp_train_state *s,
                          JsonNode **extra, GError **err) {
  if (extra) *extra = NULL;
  JsonParser *p = json_parser_new_immutable();
  GError *e = NULL;
  bool ok;
  if (len == 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s is empty; " DAMAGED, name);
    ok = false;
  } else if (!json_parser_load_from_data(p, data, (gssize)len, &e)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT, "%s is not valid JSON (%s); " DAMAGED, name, e->message);
    g_error_free(e);
    ok = false;
  } else {
    reader r = {.path = name, .err = err, .ok = true};
    ok = parse_root(&r, json_parser_get_root(p), s, extra);
  }
  g_object_unref(p);
  return ok;
}

bool tp_checkpoint_read_state(const char *dir_in, tp_train_state *s, JsonNode **extra,
                              GError **err) {
  char *dir = tp_existing_dir(dir_in);
  if (!dir) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "no checkpoint at %s (a run writes one at the end "
                "of each epoch)", dir_in);
    return false;
  }
  char *path = g_build_filename(dir, "state.json", NULL), *text = NULL;
  gsize len = 0;
  GError *e = NULL;
  bool ok = g_file_get_contents(path, &text, &len, &e);
  if (!ok) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot read %s: %s", path, e->message);
    g_error_free(e);
  } else {
    ok = tp_train_state_parse(text, len, path, s, extra, err);
  }
  g_free(text);
  g_free(path);
  g_free(dir);
  return ok;
}
