/* cli/sweep_spec.c — see sweep_spec.h. */
#include "sweep_spec.h"

#include <math.h>
#include <string.h>

#include "cli.h"
#include "run_results.h"
#include "tensorplug/error.h"

#define BAD(...) g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static const char *const studies[] = {"max_len_lr", "data_size", "model"};

const char *tp_sweep_study_title(const char *study) {
  if (!study) return "Runs";
  if (!strcmp(study, "max_len_lr")) return "Problem 1 — max length × learning rate";
  if (!strcmp(study, "data_size")) return "Problem 2 — data size";
  if (!strcmp(study, "model")) return "Problem 3 — model swap";
  return study;
}

static void run_free(tp_sweep_run *r) {
  g_free(r->name);
  g_hash_table_unref(r->settings);
  g_free(r);
}

void tp_sweep_spec_free(tp_sweep_spec *s) {
  if (!s) return;
  g_free(s->path);
  g_free(s->name);
  g_free(s->study);
  g_free(s->text);
  g_strfreev(s->from_best);
  g_strfreev(s->from_best_keys);
  g_free(s->best_dir);
  if (s->best_settings) g_hash_table_unref(s->best_settings);
  if (s->grid_keys) g_ptr_array_unref(s->grid_keys);
  if (s->runs) g_ptr_array_unref(s->runs);
  g_free(s);
}

static GHashTable *settings_new(void) {
  return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

static void settings_merge(GHashTable *into, GHashTable *from) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, from);
  while (g_hash_table_iter_next(&it, &k, &v)) g_hash_table_replace(into, g_strdup(k), g_strdup(v));
}

/* "max_len" -> "max-len" */
static char *dashed(const char *key) {
  char *d = g_strdup(key);
  for (char *p = d; *p; p++)
    if (*p == '_') *p = '-';
  return d;
}

static const tp_cli_opt *train_row(const char *key) {
  char *d = dashed(key);
  const tp_cli_opt *r = tp_cmd_train_find_option(d);
  g_free(d);
  return r;
}

static bool parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"true", "yes", "1"}, *const no[] = {"false", "no", "0"};
  for (size_t i = 0; i < 3; i++) {
    if (!g_ascii_strcasecmp(v, yes[i])) return (*out = true, true);
    if (!g_ascii_strcasecmp(v, no[i])) return (*out = false, true);
  }
  return false;
}

/* Checks a key of [defaults]/[grid]/[run] and normalises its value. */
static char *setting_value(const char *where, const char *key, const char *value, bool in_grid,
                           GError **err) {
  const tp_cli_opt *r = train_row(key);
  if (!r || !strcmp(key, "out") || !strcmp(key, "resume") || strchr(key, '-')) {
    if (r) BAD("%s: \"%s\" is the sweep's to set (each run goes into --out DIR/RUN)", where, key);
    else BAD("%s: unknown key \"%s\": use a train option with underscores (max_len for "
             "--max-len; see tensorplug train --help)%s", where, key,
             strcmp(key, "oom_fallback") == 0 ? ", or oom_fallback in [sweep], [defaults] or [run]" : "");
    return NULL;
  }
  char *v = g_strstrip(g_strdup(value));
  if (!*v) {
    BAD("%s: %s has an empty value", where, key);
    g_free(v);
    return NULL;
  }
  if (r->kind == TP_OPT_FLAG) {
    bool b;
    if (!parse_bool(v, &b)) {
      BAD("%s: %s = %s: use true or false", where, key, v);
      g_free(v);
      return NULL;
    }
    g_free(v);
    return g_strdup(b ? "true" : "false");
  }
  if (r->kind == TP_OPT_PATHS && !in_grid) {
    /* a comma list of paths: one --data each; normalise the spacing */
    char **parts = g_strsplit(v, ",", -1);
    for (char **p = parts; *p; p++) g_strstrip(*p);
    g_free(v);
    v = g_strjoinv(",", parts);
    g_strfreev(parts);
  }
  return v;
}

/* Folder-safe run names. */
static bool valid_name(const char *n) {
  if (!*n || n[0] == '.' || !strcmp(n, "attempts") || !strcmp(n, "logs") || strlen(n) > 200)
    return false;
  for (const char *p = n; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-') return false;
  return true;
}

static char *grid_name_part(const char *key, const char *value) {
  const tp_cli_opt *r = train_row(key);
  char *v = r && (r->kind == TP_OPT_PATH || r->kind == TP_OPT_PATHS || !strcmp(key, "model"))
                ? g_path_get_basename(value) : g_strdup(value);
  for (char *p = v; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-') *p = '-';
  char *part = g_strdup_printf("%s-%s", key, v);
  g_free(v);
  return part;
}

static char **split_list(const char *v) {
  char **parts = g_strsplit(v, ",", -1);
  GPtrArray *out = g_ptr_array_new();
  for (char **p = parts; *p; p++) {
    char *t = g_strstrip(*p);
    if (*t) g_ptr_array_add(out, g_strdup(t));
  }
  g_strfreev(parts);
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

/* ---- from_best: the best run of earlier sweep folders ---- */

/* Every run a sweep.json in dir lists must have finished. */
static bool check_finished_one(const char *dir, GError **err) {
  char *sp = g_build_filename(dir, "sweep.json", NULL);
  JsonParser *p = json_parser_new();
  bool ok = true;
  if (g_file_test(sp, G_FILE_TEST_IS_REGULAR) && json_parser_load_from_file(p, sp, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    JsonNode *rn = json_object_get_member(o, "runs");
    JsonArray *runs = rn && JSON_NODE_HOLDS_ARRAY(rn) ? json_node_get_array(rn) : NULL;
    for (guint i = 0; ok && runs && i < json_array_get_length(runs); i++) {
      JsonNode *e = json_array_get_element(runs, i);
      if (!JSON_NODE_HOLDS_OBJECT(e)) continue;
      const char *name = tp_cli_json_str(json_node_get_object(e), "name", "");
      char *rp = g_build_filename(dir, name, "results.json", NULL);
      if (!g_file_test(rp, G_FILE_TEST_IS_REGULAR)) {
        BAD("from_best %s: its run \"%s\" has not finished (no %s): complete that sweep first",
            dir, name, rp);
        ok = false;
      }
      g_free(rp);
    }
  }
  g_object_unref(p);
  g_free(sp);
  return ok;
}

/* dir's own sweep.json and those of its subfolders (shards: DIR/shard-0, ...). */
static bool check_finished(const char *dir, GError **err) {
  if (!check_finished_one(dir, err)) return false;
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *n;
  bool ok = true;
  while (ok && d && (n = g_dir_read_name(d))) {
    char *sub = g_build_filename(dir, n, NULL);
    if (n[0] != '.' && g_file_test(sub, G_FILE_TEST_IS_DIR)) ok = check_finished_one(sub, err);
    g_free(sub);
  }
  if (d) g_dir_close(d);
  return ok;
}

static bool resolve_from_best(tp_sweep_spec *s, GError **err) {
  for (char **d = s->from_best; *d; d++)
    if (!check_finished(*d, err)) return false;
  GPtrArray *runs = tp_run_results_find((const char *const *)s->from_best, err);
  if (!runs) {
    g_prefix_error(err, "%s: from_best: ", s->path);
    return false;
  }
  const tp_run_result *best = NULL;
  for (guint i = 0; i < runs->len; i++) {
    const tp_run_result *r = g_ptr_array_index(runs, i);
    if (isfinite(r->val_loss_best) && (!best || r->val_loss_best < best->val_loss_best)) best = r;
  }
  bool ok = best != NULL;
  if (!ok) {
    char *dirs = g_strjoinv(", ", s->from_best);
    BAD("%s: from_best %s holds no finished run (no results.json with a validation loss)",
        s->path, dirs);
    g_free(dirs);
  }
  if (ok) {
    s->best_dir = g_strdup(best->dir);
    s->best_val_loss = best->val_loss_best;
    s->best_settings = settings_new();
    for (char **k = s->from_best_keys; ok && *k; k++) {
      char *where = g_strdup_printf("%s: [sweep] from_best_keys", s->path);
      char *v = tp_run_config_text(best, *k);
      char *norm = v ? setting_value(where, *k, v, false, err) : NULL;
      if (!v && !(err && *err))
        BAD("%s: from_best_keys: %s/results.json has no \"%s\" in its config", s->path, best->dir, *k);
      ok = norm != NULL;
      if (ok) g_hash_table_replace(s->best_settings, g_strdup(*k), norm);
      g_free(v);
      g_free(where);
    }
  }
  g_ptr_array_unref(runs);
  return ok;
}

/* ---- the file ---- */

static bool read_sweep_group(tp_sweep_spec *s, GKeyFile *kf, bool *oom_default, GError **err) {
  if (!g_key_file_has_group(kf, "sweep")) return true;
  char **keys = g_key_file_get_keys(kf, "sweep", NULL, NULL);
  bool ok = true;
  for (char **k = keys; ok && *k; k++) {
    char *v = g_strstrip(g_key_file_get_string(kf, "sweep", *k, NULL));
    if (!strcmp(*k, "name")) {
      ok = valid_name(v);
      if (!ok) {
        BAD("%s: [sweep] name = %s: use letters, digits, '.', '_' and '-'", s->path, v);
      } else {
        g_free(s->name);
        s->name = g_strdup(v);
      }
    } else if (!strcmp(*k, "study")) {
      ok = g_strv_contains(studies, v);
      if (!ok) BAD("%s: [sweep] study = %s: use max_len_lr, data_size or model", s->path, v);
      else s->study = g_strdup(v);
    } else if (!strcmp(*k, "from_best")) {
      s->from_best = split_list(v);
      ok = s->from_best[0] != NULL;
      if (!ok) BAD("%s: [sweep] from_best is empty: name an earlier sweep's --out folder", s->path);
    } else if (!strcmp(*k, "from_best_keys")) {
      g_strfreev(s->from_best_keys);
      s->from_best_keys = split_list(v);
      for (char **b = s->from_best_keys; ok && *b; b++) {
        const tp_cli_opt *r = train_row(*b);
        ok = r && strcmp(*b, "out") && strcmp(*b, "resume");
        if (!ok) BAD("%s: [sweep] from_best_keys: \"%s\" is no train option (max_len for --max-len)",
                     s->path, *b);
      }
    } else if (!strcmp(*k, "oom_fallback")) {
      ok = parse_bool(v, oom_default);
      if (!ok) BAD("%s: [sweep] oom_fallback = %s: use true or false", s->path, v);
    } else {
      BAD("%s: [sweep]: unknown key \"%s\": use name, study, from_best, from_best_keys or "
          "oom_fallback", s->path, *k);
      ok = false;
    }
    g_free(v);
  }
  g_strfreev(keys);
  return ok;
}

/* Reads [group] into settings (oom_fallback into *oom). */
static bool read_settings(tp_sweep_spec *s, GKeyFile *kf, const char *group, GHashTable *settings,
                          bool *oom, GError **err) {
  char **keys = g_key_file_get_keys(kf, group, NULL, NULL);
  bool ok = true;
  char *where = g_strdup_printf("%s: [%s]", s->path, group);
  for (char **k = keys; ok && keys && *k; k++) {
    char *raw = g_key_file_get_string(kf, group, *k, NULL);
    if (!strcmp(*k, "oom_fallback")) {
      ok = parse_bool(g_strstrip(raw), oom);
      if (!ok) BAD("%s: oom_fallback = %s: use true or false", where, raw);
    } else {
      char *v = setting_value(where, *k, raw, false, err);
      ok = v != NULL;
      if (ok) g_hash_table_replace(settings, g_strdup(*k), v);
    }
    g_free(raw);
  }
  g_free(where);
  g_strfreev(keys);
  return ok;
}

static tp_sweep_run *run_new(const char *name, GHashTable *base, bool oom) {
  tp_sweep_run *r = g_new0(tp_sweep_run, 1);
  r->name = g_strdup(name);
  r->settings = settings_new();
  settings_merge(r->settings, base);
  r->oom_fallback = oom;
  return r;
}

static tp_sweep_run *find_run(tp_sweep_spec *s, const char *name) {
  for (guint i = 0; i < s->runs->len; i++) {
    tp_sweep_run *r = g_ptr_array_index(s->runs, i);
    if (!strcmp(r->name, name)) return r;
  }
  return NULL;
}

/* Every combination of the [grid] keys, the first key varying slowest. */
static bool expand_grid(tp_sweep_spec *s, GKeyFile *kf, GHashTable *base, bool oom, GError **err) {
  if (!g_key_file_has_group(kf, "grid")) return true;
  char **keys = g_key_file_get_keys(kf, "grid", NULL, NULL);
  guint nk = g_strv_length(keys);
  GPtrArray *values = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  bool ok = true;
  char *where = g_strdup_printf("%s: [grid]", s->path);
  for (guint i = 0; ok && i < nk; i++) {
    if (!strcmp(keys[i], "oom_fallback")) {
      BAD("%s: oom_fallback cannot vary: set it in [sweep], [defaults] or [run NAME]", where);
      ok = false;
      break;
    }
    char *raw = g_key_file_get_string(kf, "grid", keys[i], NULL);
    char **alts = split_list(raw);
    for (char **a = alts; ok && *a; a++) {
      char *v = setting_value(where, keys[i], *a, true, err);
      ok = v != NULL;
      if (ok) {
        g_free(*a);
        *a = v;
      }
    }
    if (ok && !alts[0]) {
      BAD("%s: %s lists no values", where, keys[i]);
      ok = false;
    }
    g_ptr_array_add(values, alts);
    g_ptr_array_add(s->grid_keys, g_strdup(keys[i]));
    g_free(raw);
  }
  guint total = 1;
  for (guint i = 0; ok && i < nk; i++) total *= g_strv_length(g_ptr_array_index(values, i));
  if (ok && total > 10000) {
    BAD("%s: %u combinations: a sweep holds at most 10000 runs", where, total);
    ok = false;
  }
  for (guint c = 0; ok && nk && c < total; c++) {
    GString *name = g_string_new(NULL);
    tp_sweep_run *r = run_new("", base, oom);
    guint rest = c;
    for (gint i = (gint)nk - 1; i >= 0; i--) { /* mixed radix, last key fastest */
      char **alts = g_ptr_array_index(values, i);
      guint n = g_strv_length(alts), pick = rest % n;
      rest /= n;
      g_hash_table_replace(r->settings, g_strdup(keys[i]), g_strdup(alts[pick]));
      char *part = grid_name_part(keys[i], alts[pick]);
      g_string_prepend(name, part);
      if (i) g_string_prepend_c(name, '_');
      g_free(part);
    }
    g_free(r->name);
    r->name = g_string_free(name, FALSE);
    if (find_run(s, r->name)) {
      BAD("%s: two combinations are both named %s: make the values distinct", where, r->name);
      ok = false;
      run_free(r);
    } else {
      g_ptr_array_add(s->runs, r);
    }
  }
  g_free(where);
  g_ptr_array_unref(values);
  g_strfreev(keys);
  return ok;
}

static bool apply_sets(tp_sweep_spec *s, char *const *sets, GError **err) {
  for (char *const *p = sets; p && *p; p++) {
    const char *eq = strchr(*p, '=');
    if (!eq || eq == *p) {
      BAD("--set %s: use KEY=VALUE (max_len=128)", *p);
      return false;
    }
    char *key = g_strndup(*p, (gsize)(eq - *p));
    g_strstrip(key);
    bool ok = true;
    if (!strcmp(key, "oom_fallback")) {
      bool b = false;
      ok = parse_bool(eq + 1, &b);
      if (!ok) BAD("--set oom_fallback=%s: use true or false", eq + 1);
      for (guint i = 0; ok && i < s->runs->len; i++)
        ((tp_sweep_run *)g_ptr_array_index(s->runs, i))->oom_fallback = b;
    } else if (g_ptr_array_find_with_equal_func(s->grid_keys, key, g_str_equal, NULL)) {
      BAD("--set %s: the spec's [grid] varies %s; change the spec instead", *p, key);
      ok = false;
    } else {
      char *v = setting_value("--set", key, eq + 1, false, err);
      ok = v != NULL;
      for (guint i = 0; ok && i < s->runs->len; i++)
        g_hash_table_replace(((tp_sweep_run *)g_ptr_array_index(s->runs, i))->settings,
                             g_strdup(key), g_strdup(v));
      g_free(v);
    }
    g_free(key);
    if (!ok) return false;
  }
  return true;
}

/* Each run's options pass train's own parsing and validation. */
static bool validate_runs(tp_sweep_spec *s, GError **err) {
  for (guint i = 0; i < s->runs->len; i++) {
    tp_sweep_run *r = g_ptr_array_index(s->runs, i);
    GPtrArray *args = tp_sweep_run_train_args(r, "RUN");
    /* the parser reorders the vector: hand it a shallow copy */
    char **argv = g_new0(char *, args->len + 1);
    argv[0] = (char *)"tensorplug train";
    for (guint j = 0; j + 1 < args->len; j++) argv[j + 1] = g_ptr_array_index(args, j);
    int argc = (int)args->len;
    bool ok = tp_cmd_train_check_args(argc, argv, err);
    g_free(argv);
    g_ptr_array_unref(args);
    if (!ok) {
      g_prefix_error(err, "%s: run \"%s\": ", s->path, r->name);
      return false;
    }
  }
  return true;
}

tp_sweep_spec *tp_sweep_spec_load(const char *path, char *const *sets, char *const *from_best,
                                  GError **err) {
  tp_sweep_spec *s = g_new0(tp_sweep_spec, 1);
  s->path = g_strdup(path);
  s->runs = g_ptr_array_new_with_free_func((GDestroyNotify)run_free);
  s->grid_keys = g_ptr_array_new_with_free_func(g_free);
  char *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base) *dot = '\0';
  s->name = base;
  s->from_best_keys = g_strsplit("max_len,lr,batch", ",", -1);
  GKeyFile *kf = g_key_file_new();
  g_key_file_set_list_separator(kf, ',');
  GHashTable *defaults = settings_new();
  bool oom = false, ok = g_file_get_contents(path, &s->text, NULL, err);
  if (ok && !(ok = g_key_file_load_from_data(kf, s->text, (gsize)-1, G_KEY_FILE_NONE, err)))
    g_prefix_error(err, "%s: ", path);
  char **groups = ok ? g_key_file_get_groups(kf, NULL) : NULL;
  for (char **g = groups; ok && g && *g; g++) {
    if (!strcmp(*g, "sweep") || !strcmp(*g, "defaults") || !strcmp(*g, "grid")) continue;
    if (g_str_has_prefix(*g, "run ")) {
      const char *name = *g + 4;
      if (!valid_name(name)) {
        BAD("%s: [%s]: a run name is a folder name: use letters, digits, '.', '_' and '-'", path, *g);
        ok = false;
      }
      continue;
    }
    BAD("%s: unknown group [%s]: use [sweep], [defaults], [grid] or [run NAME]", path, *g);
    ok = false;
  }
  if (ok) ok = read_sweep_group(s, kf, &oom, err);
  if (ok && from_best && from_best[0]) {
    g_strfreev(s->from_best);
    s->from_best = g_strdupv((char **)from_best);
  }
  if (ok && g_key_file_has_group(kf, "defaults"))
    ok = read_settings(s, kf, "defaults", defaults, &oom, err);
  if (ok && s->from_best) {
    ok = resolve_from_best(s, err);
    if (ok) settings_merge(defaults, s->best_settings);
  }
  if (ok) ok = expand_grid(s, kf, defaults, oom, err);
  for (char **g = groups; ok && g && *g; g++) {
    if (!g_str_has_prefix(*g, "run ")) continue;
    tp_sweep_run *r = find_run(s, *g + 4);
    if (!r) {
      r = run_new(*g + 4, defaults, oom);
      g_ptr_array_add(s->runs, r);
    }
    ok = read_settings(s, kf, *g, r->settings, &r->oom_fallback, err);
  }
  if (ok && s->runs->len == 0) {
    BAD("%s declares no runs: add [grid] keys or [run NAME] groups", path);
    ok = false;
  }
  if (ok) ok = apply_sets(s, sets, err);
  for (guint i = 0; ok && i < s->runs->len; i++) ((tp_sweep_run *)g_ptr_array_index(s->runs, i))->index = (int)i;
  if (ok) ok = validate_runs(s, err);
  g_strfreev(groups);
  g_hash_table_unref(defaults);
  g_key_file_free(kf);
  if (!ok) {
    tp_sweep_spec_free(s);
    return NULL;
  }
  return s;
}

static int cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static GPtrArray *sorted_keys(GHashTable *settings) {
  GPtrArray *keys = g_ptr_array_new();
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, settings);
  while (g_hash_table_iter_next(&it, &k, NULL)) g_ptr_array_add(keys, k);
  g_ptr_array_sort(keys, cmp_str);
  return keys;
}

GPtrArray *tp_sweep_run_train_args(const tp_sweep_run *r, const char *run_dir) {
  GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *keys = sorted_keys(r->settings);
  for (guint i = 0; i < keys->len; i++) {
    const char *k = g_ptr_array_index(keys, i);
    const char *v = g_hash_table_lookup(r->settings, k);
    const tp_cli_opt *row = train_row(k);
    char *flag = g_strdup_printf("--%s", k);
    for (char *p = flag + 2; *p; p++)
      if (*p == '_') *p = '-';
    if (row && row->kind == TP_OPT_FLAG) {
      if (!strcmp(v, "true")) g_ptr_array_add(args, g_strdup(flag));
    } else if (row && row->kind == TP_OPT_PATHS) {
      char **parts = split_list(v);
      for (char **p = parts; *p; p++) {
        g_ptr_array_add(args, g_strdup(flag));
        g_ptr_array_add(args, g_strdup(*p));
      }
      g_strfreev(parts);
    } else {
      g_ptr_array_add(args, g_strdup(flag));
      g_ptr_array_add(args, g_strdup(v));
    }
    g_free(flag);
  }
  g_ptr_array_unref(keys);
  g_ptr_array_add(args, g_strdup("--out"));
  g_ptr_array_add(args, g_strdup(run_dir));
  g_ptr_array_add(args, NULL);
  return args;
}

char *tp_sweep_run_identity(GHashTable *settings) {
  GPtrArray *keys = sorted_keys(settings);
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < keys->len; i++) {
    const char *k = g_ptr_array_index(keys, i);
    if (!strcmp(k, "threads") || !strcmp(k, "backend") || !strcmp(k, "device")) continue;
    g_string_append_printf(s, "%s=%s\n", k, (const char *)g_hash_table_lookup(settings, k));
  }
  g_ptr_array_unref(keys);
  return g_string_free(s, FALSE);
}
