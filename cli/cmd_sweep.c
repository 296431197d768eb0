/* cli/cmd_sweep.c — `tensorplug sweep SPEC --out DIR`: every run of an
 * experiment spec (cli/sweep_spec.h) as `tensorplug train` into DIR/RUN/.
 *
 * Each run is a child process of this same binary, so a crash or kill of one
 * run loses nothing that finished before it. DIR/sweep.json records the spec,
 * each run's settings and status, and the out-of-memory fallbacks taken; a
 * second start skips finished runs, resumes an interrupted one from its
 * checkpoint and starts the rest. DIR/sweep.lock (held by the sweep and its
 * current run) keeps two sweeps out of one folder; a run outlives a killed
 * sweep by at most one training step (it gets SIGTERM, PR_SET_PDEATHSIG). */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "run_results.h"
#include "sweep_spec.h"
#include "tensorplug/error.h"
#include "tp_commit.h"

static volatile sig_atomic_t g_stop;
static volatile pid_t g_child;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
  if (g_child > 0) kill(g_child, SIGINT); /* the run saves what it can and exits 130 */
}

typedef struct sweep_opts {
  tp_cli_opts o; /* device options, passed to every run */
  char *out, *shard;
  char **sets, **from_best;
  gboolean dry_run;
} sweep_opts;

/* What sweep.json says about one run. */
typedef struct run_state {
  tp_sweep_run *run; /* from the spec */
  char *dir;
  char *batch;      /* the batch it runs with (after out-of-memory fallbacks) */
  JsonArray *oom;   /* [{batch, message}] */
  char *status;     /* pending, running, done, failed, interrupted */
  int exit_status;
  char *error;
} run_state;

typedef struct sweep {
  tp_sweep_spec *spec;
  const sweep_opts *opts;
  int shard_i, shard_n;
  GPtrArray *runs; /* run_state * of this shard */
  char *json_path;
  int lock_fd;
} sweep;

static void run_state_free(run_state *s) {
  g_free(s->dir);
  g_free(s->batch);
  if (s->oom) json_array_unref(s->oom);
  g_free(s->status);
  g_free(s->error);
  g_free(s);
}

static void set_str(char **p, const char *v) {
  char *old = *p;
  *p = g_strdup(v);
  g_free(old);
}

static bool parse_shard(const char *text, int *i, int *n, GError **err) {
  *i = 0;
  *n = 1;
  if (!text) return true;
  gint64 a = -1, b = -1;
  char **parts = g_strsplit(text, "/", 3);
  bool ok = g_strv_length(parts) == 2 &&
            g_ascii_string_to_signed(parts[0], 10, 0, 100000, &a, NULL) &&
            g_ascii_string_to_signed(parts[1], 10, 1, 100000, &b, NULL) && a < b;
  g_strfreev(parts);
  if (!ok) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "--shard %s: use I/N with 0 <= I < N (--shard 0/2 and --shard 1/2 split a sweep "
                "in two)", text);
    return false;
  }
  *i = (int)a;
  *n = (int)b;
  return true;
}

/* ---- sweep.json ---- */

static JsonNode *settings_json(GHashTable *settings) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  GList *keys = g_list_sort(g_hash_table_get_keys(settings), (GCompareFunc)strcmp);
  for (GList *k = keys; k; k = k->next) {
    json_builder_set_member_name(b, k->data);
    json_builder_add_string_value(b, g_hash_table_lookup(settings, k->data));
  }
  g_list_free(keys);
  json_builder_end_object(b);
  JsonNode *n = json_builder_get_root(b);
  g_object_unref(b);
  return n;
}

static bool write_state(sweep *sw, GError **err) {
  tp_sweep_spec *sp = sw->spec;
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
#define PUT_STR(k, v)                                                                          \
  do {                                                                                         \
    json_builder_set_member_name(b, k);                                                        \
    if (v) json_builder_add_string_value(b, v);                                                \
    else json_builder_add_null_value(b);                                                       \
  } while (0)
#define PUT_INT(k, v)                                                                          \
  do {                                                                                         \
    json_builder_set_member_name(b, k);                                                        \
    json_builder_add_int_value(b, v);                                                          \
  } while (0)
  PUT_STR("format", "tensorplug-sweep-1");
  PUT_STR("name", sp->name);
  PUT_STR("study", sp->study);
  PUT_STR("spec", sp->path);
  PUT_STR("spec_text", sp->text);
  PUT_STR("commit", TP_COMMIT);
  json_builder_set_member_name(b, "shard");
  json_builder_begin_object(b);
  PUT_INT("index", sw->shard_i);
  PUT_INT("count", sw->shard_n);
  json_builder_end_object(b);
  PUT_INT("spec_runs", sp->runs->len);
  json_builder_set_member_name(b, "from_best");
  if (sp->best_dir) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dirs");
    json_builder_begin_array(b);
    for (char **d = sp->from_best; *d; d++) json_builder_add_string_value(b, *d);
    json_builder_end_array(b);
    PUT_STR("run", sp->best_dir);
    json_builder_set_member_name(b, "val_loss");
    json_builder_add_double_value(b, sp->best_val_loss);
    json_builder_set_member_name(b, "settings");
    json_builder_add_value(b, settings_json(sp->best_settings));
    json_builder_end_object(b);
  } else {
    json_builder_add_null_value(b);
  }
  json_builder_set_member_name(b, "runs");
  json_builder_begin_array(b);
  for (guint i = 0; i < sw->runs->len; i++) {
    run_state *s = g_ptr_array_index(sw->runs, i);
    json_builder_begin_object(b);
    PUT_STR("name", s->run->name);
    PUT_INT("index", s->run->index);
    json_builder_set_member_name(b, "settings");
    json_builder_add_value(b, settings_json(s->run->settings));
    json_builder_set_member_name(b, "oom_fallback");
    json_builder_add_boolean_value(b, s->run->oom_fallback);
    PUT_STR("batch", s->batch);
    json_builder_set_member_name(b, "oom");
    json_builder_add_value(b, json_node_init_array(json_node_alloc(), s->oom));
    PUT_STR("status", s->status);
    PUT_INT("exit", s->exit_status);
    PUT_STR("error", s->error);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
#undef PUT_STR
#undef PUT_INT
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  bool ok = tp_cli_write_json(sw->json_path, root, err);
  json_node_unref(root);
  g_object_unref(b);
  return ok;
}

static GHashTable *settings_from_json(JsonObject *o) {
  GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  GList *members = o ? json_object_get_members(o) : NULL;
  for (GList *m = members; m; m = m->next) {
    JsonNode *n = json_object_get_member(o, m->data);
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
      g_hash_table_replace(t, g_strdup(m->data), g_strdup(json_node_get_string(n)));
  }
  g_list_free(members);
  return t;
}

static bool run_started(const run_state *s) {
  char *rp = g_build_filename(s->dir, "results.json", NULL);
  char *ck = g_build_filename(s->dir, "checkpoint", NULL);
  char *ex = tp_existing_dir(ck);
  bool started = g_file_test(rp, G_FILE_TEST_EXISTS) || ex;
  g_free(ex);
  g_free(ck);
  g_free(rp);
  return started;
}

/* Takes over what an earlier start of this sweep recorded: the batch after
 * out-of-memory fallbacks. A run whose settings changed since it started is
 * an error: its results would not be what the spec now says. */
static bool load_state(sweep *sw, GError **err) {
  JsonParser *p = json_parser_new();
  bool ok = true;
  if (!g_file_test(sw->json_path, G_FILE_TEST_EXISTS)) goto out;
  if (!json_parser_load_from_file(p, sw->json_path, err)) {
    g_prefix_error(err, "%s: ", sw->json_path);
    ok = false;
    goto out;
  }
  JsonNode *root = json_parser_get_root(p);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  const char *name = tp_cli_json_str(o, "name", "");
  if (strcmp(name, sw->spec->name) != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s holds the sweep \"%s\", not \"%s\": "
                "give this sweep its own --out folder", sw->opts->out, name, sw->spec->name);
    ok = false;
    goto out;
  }
  JsonObject *sh = json_object_has_member(o, "shard") ? json_object_get_object_member(o, "shard") : NULL;
  gint64 si = sh ? json_object_get_int_member_with_default(sh, "index", 0) : 0;
  gint64 sn = sh ? json_object_get_int_member_with_default(sh, "count", 1) : 1;
  if (si != sw->shard_i || sn != sw->shard_n) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT, "%s holds shard %lld/%lld of \"%s\", "
                "not %d/%d: each shard needs its own --out folder", sw->opts->out, (long long)si,
                (long long)sn, name, sw->shard_i, sw->shard_n);
    ok = false;
    goto out;
  }
  JsonArray *runs = json_object_has_member(o, "runs") ? json_object_get_array_member(o, "runs") : NULL;
  for (guint i = 0; ok && runs && i < json_array_get_length(runs); i++) {
    JsonObject *ro = json_array_get_object_element(runs, i);
    const char *rn = tp_cli_json_str(ro, "name", "");
    for (guint j = 0; ok && j < sw->runs->len; j++) {
      run_state *s = g_ptr_array_index(sw->runs, j);
      if (strcmp(s->run->name, rn) != 0) continue;
      JsonObject *so = json_object_has_member(ro, "settings") ? json_object_get_object_member(ro, "settings") : NULL;
      GHashTable *before = settings_from_json(so);
      char *a = tp_sweep_run_identity(before), *b = tp_sweep_run_identity(s->run->settings);
      if (strcmp(a, b) != 0 && run_started(s)) {
        g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                    "run \"%s\" in %s was started with other settings than the spec now gives "
                    "(before:\n%snow:\n%s): use another --out folder, or remove %s to run it anew",
                    rn, sw->opts->out, a, b, s->dir);
        ok = false;
      } else if (strcmp(a, b) == 0) {
        const char *batch = tp_cli_json_str(ro, "batch", NULL);
        if (batch) set_str(&s->batch, batch);
        JsonArray *oom = json_object_has_member(ro, "oom") ? json_object_get_array_member(ro, "oom") : NULL;
        if (oom) {
          json_array_unref(s->oom);
          s->oom = json_array_ref(oom);
        }
      }
      g_free(a);
      g_free(b);
      g_hash_table_unref(before);
    }
  }
out:
  g_object_unref(p);
  return ok;
}

/* ---- one run ---- */

static void child_setup(gpointer user) {
  /* the run stops (after its current step) when the sweep dies */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != (pid_t)GPOINTER_TO_INT(user)) raise(SIGTERM);
}

/* Moves an unfinished run folder to DIR/attempts/NAME-WHY[-N] (kept for its logs). */
static bool move_aside(const sweep *sw, const run_state *s, const char *why, GError **err) {
  if (!g_file_test(s->dir, G_FILE_TEST_EXISTS)) return true;
  char *att = g_build_filename(sw->opts->out, "attempts", NULL);
  g_mkdir_with_parents(att, 0755);
  char *dst = NULL;
  for (int k = 1; !dst || g_file_test(dst, G_FILE_TEST_EXISTS); k++) {
    g_free(dst);
    char *leaf = k == 1 ? g_strdup_printf("%s-%s", s->run->name, why)
                        : g_strdup_printf("%s-%s-%d", s->run->name, why, k);
    dst = g_build_filename(att, leaf, NULL);
    g_free(leaf);
  }
  bool ok = g_rename(s->dir, dst) == 0;
  if (!ok) g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot move %s to %s: %s", s->dir, dst, g_strerror(errno));
  else printf("   (the unfinished folder is kept as %s)\n", dst);
  g_free(dst);
  g_free(att);
  return ok;
}

typedef struct outcome {
  int status;       /* exit status, or 128 + signal */
  char *code;       /* from $TENSORPLUG_ERROR_JSON: "out_of_memory", ... */
  char *message;
} outcome;

/* Runs `tensorplug ARGS`, its output going to our stdout and to log_path. */
static bool spawn_run(const sweep *sw, GPtrArray *args, const char *log_path, const char *err_path,
                      outcome *o, GError **err) {
  char *exe = g_file_read_link("/proc/self/exe", err);
  if (!exe) return false;
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, exe);
  g_ptr_array_add(argv, "train");
  for (guint i = 0; i + 1 < args->len; i++) g_ptr_array_add(argv, g_ptr_array_index(args, i));
  g_ptr_array_add(argv, NULL);
  char **envp = g_get_environ();
  envp = g_environ_setenv(envp, "TENSORPLUG_ERROR_JSON", err_path, TRUE);
  g_unlink(err_path);
  int pipefd[2] = {-1, -1};
  bool ok = g_unix_open_pipe(pipefd, FD_CLOEXEC, err);
  GPid pid = 0;
  int source_fds[1] = {sw->lock_fd}, target_fds[1] = {3};
  fflush(stdout);
  if (ok)
    ok = g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv->pdata,
                                          (const char *const *)envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                          child_setup, GINT_TO_POINTER(getpid()), -1, pipefd[1],
                                          pipefd[1], source_fds, target_fds, 1, &pid, NULL, NULL,
                                          NULL, err);
  if (pipefd[1] >= 0) close(pipefd[1]); /* the child has its copy */
  if (ok) {
    g_child = pid;
    if (g_stop) kill(pid, SIGINT); /* a signal that came before the child existed */
    FILE *log = fopen(log_path, "w");
    if (log) setvbuf(log, NULL, _IOLBF, 0); /* tail -f shows the run as it goes */
    char buf[8192];
    for (;;) {
      ssize_t n = read(pipefd[0], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      fwrite(buf, 1, (size_t)n, stdout);
      fflush(stdout);
      if (log) fwrite(buf, 1, (size_t)n, log);
    }
    if (log) fclose(log);
    close(pipefd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    g_child = 0;
    g_spawn_close_pid(pid);
    o->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    JsonParser *jp = json_parser_new();
    if (g_file_test(err_path, G_FILE_TEST_EXISTS) && json_parser_load_from_file(jp, err_path, NULL) &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(jp))) {
      JsonObject *eo = json_node_get_object(json_parser_get_root(jp));
      o->code = g_strdup(tp_cli_json_str(eo, "code", ""));
      o->message = g_strdup(tp_cli_json_str(eo, "message", ""));
    }
    g_object_unref(jp);
    g_unlink(err_path);
  } else if (pipefd[0] >= 0) {
    close(pipefd[0]);
  }
  g_strfreev(envp);
  g_ptr_array_unref(argv);
  g_free(exe);
  return ok;
}

static void print_argv(const char *prefix, GPtrArray *args) {
  printf("%stensorplug train", prefix);
  for (guint i = 0; i + 1 < args->len; i++) {
    char *q = g_shell_quote(g_ptr_array_index(args, i));
    const char *a = g_ptr_array_index(args, i);
    printf(" %s", strpbrk(a, " '\"$\\*?;&|<>()") ? q : a);
    g_free(q);
  }
  printf("\n");
}

/* `train --resume DIR/RUN` (the checkpoint holds every other option). */
static GPtrArray *resume_args(const run_state *s) {
  GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(args, g_strdup("--resume"));
  g_ptr_array_add(args, g_strdup(s->dir));
  const char *threads = g_hash_table_lookup(s->run->settings, "threads");
  if (threads) {
    g_ptr_array_add(args, g_strdup("--threads"));
    g_ptr_array_add(args, g_strdup(threads));
  }
  g_ptr_array_add(args, NULL);
  return args;
}

/* The run's own options, with the batch an out-of-memory fallback chose. */
static GPtrArray *fresh_args(const run_state *s) {
  tp_sweep_run r = *s->run;
  r.settings = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, s->run->settings);
  while (g_hash_table_iter_next(&it, &k, &v)) g_hash_table_replace(r.settings, g_strdup(k), g_strdup(v));
  if (s->batch) g_hash_table_replace(r.settings, g_strdup("batch"), g_strdup(s->batch));
  GPtrArray *args = tp_sweep_run_train_args(&r, s->dir);
  g_hash_table_unref(r.settings);
  return args;
}

/* How the next attempt of a run starts: from its checkpoint, else afresh
 * (an unfinished folder without a checkpoint moved aside first). */
static GPtrArray *next_args(const sweep *sw, const run_state *s, guint k, guint n, GError **err) {
  char *ck = g_build_filename(s->dir, "checkpoint", NULL);
  char *have = tp_existing_dir(ck);
  g_free(ck);
  if (have) {
    g_free(have);
    printf("== [%u/%u] %s: resuming from its checkpoint\n", k, n, s->run->name);
    return resume_args(s);
  }
  if (g_file_test(s->dir, G_FILE_TEST_EXISTS)) {
    printf("== [%u/%u] %s: an earlier start left no checkpoint: starting again\n", k, n, s->run->name);
    if (!move_aside(sw, s, "incomplete", err)) return NULL;
  }
  printf("== [%u/%u] %s\n", k, n, s->run->name);
  return fresh_args(s);
}

/* The batch the run used last. */
static int current_batch(const run_state *s) {
  const char *cur = s->batch ? s->batch : g_hash_table_lookup(s->run->settings, "batch");
  char *def = cur ? NULL : tp_cmd_train_default_text("batch");
  int batch = atoi(cur ? cur : def);
  g_free(def);
  return batch;
}

typedef enum { NEXT_DONE, NEXT_RETRY, NEXT_STOP } next_step;

/* Records how an attempt ended and says what comes next: the next run
 * (done or failed), the same run with half the batch, or the end of the
 * sweep (interrupted, or the state could not be written). */
static next_step record_outcome(sweep *sw, run_state *s, const outcome *o, const char *log_path,
                                guint k, guint n, GError **err) {
  s->exit_status = o->status;
  if (o->status == 0) {
    set_str(&s->status, "done");
    set_str(&s->error, NULL);
    printf("== [%u/%u] %s: done\n", k, n, s->run->name);
    return write_state(sw, err) ? NEXT_DONE : NEXT_STOP;
  }
  if (o->status == TP_EXIT_INTERRUPTED || o->status == 128 + SIGINT ||
      o->status == 128 + SIGTERM || g_stop) {
    set_str(&s->status, "interrupted");
    write_state(sw, NULL);
    g_set_error(err, TP_ERROR, TP_ERROR_INTERRUPTED, "sweep interrupted during run \"%s\"; "
                "start the same command again to resume it and run the rest", s->run->name);
    return NEXT_STOP;
  }
  int batch = current_batch(s);
  if (o->code && !strcmp(o->code, "out_of_memory") && s->run->oom_fallback && batch > 1) {
    JsonObject *e = json_object_new();
    json_object_set_int_member(e, "batch", batch);
    json_object_set_string_member(e, "message", o->message ? o->message : "");
    json_array_add_object_element(s->oom, e);
    char *half = g_strdup_printf("%d", batch / 2), *why = g_strdup_printf("oom-batch%d", batch);
    printf("== [%u/%u] %s: out of memory at batch %d: halving the batch to %s (oom_fallback)\n",
           k, n, s->run->name, batch, half);
    set_str(&s->batch, half);
    bool ok = move_aside(sw, s, why, err) && write_state(sw, err);
    g_free(why);
    g_free(half);
    return ok ? NEXT_RETRY : NEXT_STOP;
  }
  set_str(&s->status, "failed");
  char *m = o->message ? g_strdup(o->message)
                       : g_strdup_printf("exit status %d (see %s)", o->status, log_path);
  set_str(&s->error, m);
  g_free(m);
  printf("== [%u/%u] %s: FAILED (%s); going on with the next run\n", k, n, s->run->name, s->error);
  return write_state(sw, err) ? NEXT_DONE : NEXT_STOP;
}

/* Runs one run to its end, through resumes and out-of-memory fallbacks.
 * Returns false only when the sweep itself cannot go on (I/O, interrupt). */
static bool do_run(sweep *sw, run_state *s, guint k, guint n, GError **err) {
  char *rp = g_build_filename(s->dir, "results.json", NULL);
  bool finished = g_file_test(rp, G_FILE_TEST_IS_REGULAR);
  g_free(rp);
  if (finished) {
    printf("== [%u/%u] %s: finished earlier, skipped\n", k, n, s->run->name);
    set_str(&s->status, "done");
    return write_state(sw, err);
  }
  char *logs = g_build_filename(sw->opts->out, "logs", NULL);
  g_mkdir_with_parents(logs, 0755);
  char *leaf = g_strdup_printf("%s.log", s->run->name);
  char *log_path = g_build_filename(logs, leaf, NULL);
  char *eleaf = g_strdup_printf(".%s.error.json", s->run->name);
  char *err_path = g_build_filename(sw->opts->out, eleaf, NULL);
  next_step next = NEXT_RETRY;
  while (next == NEXT_RETRY) {
    GPtrArray *args = next_args(sw, s, k, n, err);
    if (!args) {
      next = NEXT_STOP;
      break;
    }
    print_argv("   ", args);
    set_str(&s->status, "running");
    outcome o = {0};
    if (write_state(sw, err) && spawn_run(sw, args, log_path, err_path, &o, err))
      next = record_outcome(sw, s, &o, log_path, k, n, err);
    else
      next = NEXT_STOP;
    g_ptr_array_unref(args);
    g_free(o.code);
    g_free(o.message);
  }
  g_free(err_path);
  g_free(eleaf);
  g_free(log_path);
  g_free(leaf);
  g_free(logs);
  return next != NEXT_STOP;
}

/* ---- the command ---- */

static bool take_lock(sweep *sw, GError **err) {
  char *path = g_build_filename(sw->opts->out, "sweep.lock", NULL);
  sw->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  bool ok = sw->lock_fd >= 0;
  if (!ok) g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot open %s: %s", path, g_strerror(errno));
  /* a killed sweep's run holds the lock until its current step ends */
  for (int waited = 0; ok && flock(sw->lock_fd, LOCK_EX | LOCK_NB) != 0; waited++) {
    if (waited == 0) printf("Waiting for %s (another sweep, or the last run of a killed one, "
                            "is still running in %s)\n", path, sw->opts->out);
    fflush(stdout);
    if (waited >= 600) {
      g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "another sweep is running in %s (it "
                  "holds %s): wait for it, or use another --out", sw->opts->out, path);
      ok = false;
    }
    g_usleep(100000);
  }
  g_free(path);
  return ok;
}

static void print_plan(const sweep *sw) {
  tp_sweep_spec *sp = sw->spec;
  printf("Sweep %s (%s): %u runs in the spec", sp->name, tp_sweep_study_title(sp->study), sp->runs->len);
  if (sw->shard_n > 1) printf(", %u in shard %d/%d", sw->runs->len, sw->shard_i, sw->shard_n);
  printf("\n");
  if (sp->best_dir) {
    printf("from_best: %s (validation loss %.4f):", sp->best_dir, sp->best_val_loss);
    for (char **k = sp->from_best_keys; *k; k++)
      printf(" %s=%s", *k, (const char *)g_hash_table_lookup(sp->best_settings, *k));
    printf("\n");
  }
}

static int run_sweep(sweep_opts *opts, const char *spec_path) {
  GError *err = NULL;
  sweep sw = {.opts = opts, .lock_fd = -1};
  if (!parse_shard(opts->shard, &sw.shard_i, &sw.shard_n, &err)) return tp_cli_report(err);
  /* device options given here apply to every run */
  GPtrArray *sets = g_ptr_array_new_with_free_func(g_free);
  for (char **p = opts->sets; p && *p; p++) g_ptr_array_add(sets, g_strdup(*p));
  if (opts->o.ro.backend) g_ptr_array_add(sets, g_strdup_printf("backend=%s", opts->o.ro.backend));
  if (opts->o.ro.precision) g_ptr_array_add(sets, g_strdup_printf("precision=%s", opts->o.ro.precision));
  if (opts->o.ro.device >= 0) g_ptr_array_add(sets, g_strdup_printf("device=%d", opts->o.ro.device));
  if (opts->o.ro.threads > 0) g_ptr_array_add(sets, g_strdup_printf("threads=%d", opts->o.ro.threads));
  g_ptr_array_add(sets, NULL);
  sw.spec = tp_sweep_spec_load(spec_path, (char *const *)sets->pdata, opts->from_best, &err);
  g_ptr_array_unref(sets);
  if (!sw.spec) return tp_cli_report(err);
  sw.runs = g_ptr_array_new_with_free_func((GDestroyNotify)run_state_free);
  for (guint i = 0; i < sw.spec->runs->len; i++) {
    if ((int)(i % (guint)sw.shard_n) != sw.shard_i) continue;
    run_state *s = g_new0(run_state, 1);
    s->run = g_ptr_array_index(sw.spec->runs, i);
    s->dir = g_build_filename(opts->out, s->run->name, NULL);
    s->oom = json_array_new();
    s->status = g_strdup("pending");
    g_ptr_array_add(sw.runs, s);
  }
  sw.json_path = g_build_filename(opts->out, "sweep.json", NULL);
  print_plan(&sw);
  int rc = TP_EXIT_OK;
  if (opts->dry_run) {
    for (guint i = 0; i < sw.runs->len; i++) {
      run_state *s = g_ptr_array_index(sw.runs, i);
      GPtrArray *args = tp_sweep_run_train_args(s->run, s->dir);
      printf("[%u/%u] %s%s\n", i + 1, sw.runs->len, s->run->name,
             s->run->oom_fallback ? " (oom_fallback)" : "");
      print_argv("   ", args);
      g_ptr_array_unref(args);
    }
    goto out;
  }
  if (g_mkdir_with_parents(opts->out, 0755) != 0) {
    g_set_error(&err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", opts->out, g_strerror(errno));
    rc = tp_cli_report(err);
    goto out;
  }
  bool ok = take_lock(&sw, &err) && load_state(&sw, &err) && write_state(&sw, &err);
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal; /* no SA_RESTART: reads wake up to forward the signal */
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  for (guint i = 0; ok && i < sw.runs->len; i++) {
    if (g_stop) {
      g_set_error(&err, TP_ERROR, TP_ERROR_INTERRUPTED, "sweep interrupted; start the same "
                  "command again to run the rest");
      ok = false;
      break;
    }
    ok = do_run(&sw, g_ptr_array_index(sw.runs, i), i + 1, sw.runs->len, &err);
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  guint done = 0, failed = 0;
  printf("\n%-40s %-11s %9s %9s\n", "RUN", "STATUS", "VAL ACC", "TEST ACC");
  for (guint i = 0; i < sw.runs->len; i++) {
    run_state *s = g_ptr_array_index(sw.runs, i);
    done += !strcmp(s->status, "done");
    failed += !strcmp(s->status, "failed");
    tp_run_result *r = !strcmp(s->status, "done") ? tp_run_result_load(s->dir, NULL) : NULL;
    if (r) printf("%-40s %-11s %9.4f %9.4f\n", s->run->name, s->status, r->val_acc_best, r->test_acc);
    else printf("%-40s %-11s %9s %9s\n", s->run->name, s->status, "-", "-");
    tp_run_result_free(r);
  }
  printf("\n%u of %u runs done; sweep state: %s\nTables and plots: tensorplug report %s\n", done,
         sw.runs->len, sw.json_path, opts->out);
  fflush(stdout); /* the table before the error */
  if (!ok) rc = tp_cli_report(err);
  else if (failed) {
    g_set_error(&err, TP_ERROR, TP_ERROR_BACKEND, "%u run(s) failed (see %s and %s/logs/): start "
                "the same command again to retry them", failed, sw.json_path, opts->out);
    rc = tp_cli_report(err);
  }
out:
  if (sw.lock_fd >= 0) close(sw.lock_fd);
  g_free(sw.json_path);
  if (sw.runs) g_ptr_array_unref(sw.runs);
  tp_sweep_spec_free(sw.spec);
  return rc;
}

#define OFF(f) offsetof(sweep_opts, f)
static const tp_cli_opt sweep_rows[] = {
    {.name = "out", .kind = TP_OPT_PATH, .offset = OFF(out), .arg = "DIR",
     .help = "Sweep folder: DIR/RUN/ per run, DIR/sweep.json, DIR/logs/RUN.log (required)"},
    {.name = "shard", .kind = TP_OPT_STRING, .offset = OFF(shard), .arg = "I/N",
     .help = "Run only the runs whose spec index is I modulo N (one Slurm array task each; "
             "report merges the folders)", .shown_def = "0/1"},
    {.name = "set", .kind = TP_OPT_STRINGS, .offset = OFF(sets), .arg = "KEY=VALUE",
     .help = "Override a setting of every run, e.g. --set data=PATH --set epochs=1 (repeatable)"},
    {.name = "from-best", .kind = TP_OPT_PATHS, .offset = OFF(from_best), .arg = "DIR",
     .help = "Take the best run from these sweep folders instead of the spec's from_best "
             "(repeatable)"},
    {.name = "dry-run", .kind = TP_OPT_FLAG, .offset = OFF(dry_run),
     .help = "Print each run's train command and stop"},
};
#undef OFF

int tp_cmd_sweep(int argc, char **argv) {
  sweep_opts o = {0};
  tp_cli_opts_init(&o.o);
  tp_cli_optset *set = tp_cli_optset_new("SPEC",
      "Runs every run of an experiment spec (an INI file: [sweep], [defaults], [grid],\n"
      "[run NAME]; docs/experiments.md) with `tensorplug train`, each into DIR/RUN/.\n"
      "Start it again after a crash or Ctrl-C: finished runs are skipped, an interrupted\n"
      "run resumes from its checkpoint. With oom_fallback = true, a run that runs out of\n"
      "memory is started again with half the batch (recorded in DIR/sweep.json).",
      "Example:\n"
      "  tensorplug sweep examples/experiments/problem1-tiny.ini --out runs/p1-tiny\n"
      "  tensorplug report runs/p1-tiny\n\n"
      "Exit status: 0 every run done, 1 a run failed, 2 bad spec or usage, 130 interrupted.");
  tp_cli_optset_add(set, "Options", sweep_rows, G_N_ELEMENTS(sweep_rows), &o);
  tp_cli_optset_add_device(set, &o.o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  if (rc < 0) {
    if (argc != 2) {
      fprintf(stderr, "tensorplug: error: %s\nRun `tensorplug sweep --help` for the options.\n",
              argc < 2 ? "give one SPEC file" : "give one SPEC file only");
      rc = TP_EXIT_USAGE;
    } else if (!o.out) {
      fprintf(stderr, "tensorplug: error: --out DIR is required (the sweep's folder)\n");
      rc = TP_EXIT_USAGE;
    } else {
      rc = run_sweep(&o, argv[1]);
    }
  }
  tp_cli_opts_clear(&o.o);
  g_free(o.out);
  g_free(o.shard);
  g_strfreev(o.sets);
  g_strfreev(o.from_best);
  return rc;
}
