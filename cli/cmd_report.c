/* cli/cmd_report.c — `tensorplug report DIR... [--out DIR]`: every run under
 * the folders (each folder holding a results.json; sweep shards merge by run
 * index) as summary.csv, summary.json, report.md and a self-contained
 * report.html with gnuplot's SVG plots inlined, the homework's graded answer
 * for each study it recognises, and a warning when runs that declare
 * different subsets share one split (the seed notebook's stale-split bug). */
#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "run_results.h"
#include "sweep_spec.h"
#include "tensorplug/error.h"

typedef struct report_opts {
  char *out;
} report_opts;

/* Runs of one sweep (or of no sweep), and what they study. */
typedef struct group {
  char *sweep; /* NULL: runs outside any sweep */
  char *study; /* recorded or inferred; NULL when unknown */
  GPtrArray *runs; /* tp_run_result *, borrowed */
  const tp_run_result *best;
} group;

typedef struct plot {
  const char *file, *title;
  bool drawn;
  char *why_not;
} plot;

enum { PLOT_VAL_LOSS, PLOT_MAXLEN, PLOT_DATA, PLOT_MODELS, N_PLOTS };

typedef struct report {
  GPtrArray *runs;   /* tp_run_result *, owned */
  GPtrArray *groups; /* group * */
  GPtrArray *warnings; /* char * */
  plot plots[N_PLOTS];
  const char *out;
} report;

static void group_free(group *g) {
  g_free(g->sweep);
  g_free(g->study);
  g_ptr_array_unref(g->runs);
  g_free(g);
}

/* ---- studies and answers ---- */

static bool varies(GPtrArray *runs, char *(*key)(const tp_run_result *)) {
  char *first = NULL;
  bool v = false;
  for (guint i = 0; i < runs->len && !v; i++) {
    char *k = key(g_ptr_array_index(runs, i));
    if (!first) first = g_strdup(k);
    else v = g_strcmp0(first, k) != 0;
    g_free(k);
  }
  g_free(first);
  return v;
}
static char *key_model(const tp_run_result *r) { return g_strdup(r->model); }
static char *key_subset(const tp_run_result *r) { return g_strdup_printf("%.17g", r->subset); }
static char *key_len_lr(const tp_run_result *r) { return g_strdup_printf("%d %.17g", r->max_len, r->lr); }

/* What varies across the runs: the model, else the subset, else length/lr. */
static char *infer_study(GPtrArray *runs) {
  if (runs->len < 2) return NULL;
  if (varies(runs, key_model)) return g_strdup("model");
  if (varies(runs, key_subset)) return g_strdup("data_size");
  if (varies(runs, key_len_lr)) return g_strdup("max_len_lr");
  return NULL;
}

static void make_groups(report *rp) {
  rp->groups = g_ptr_array_new_with_free_func((GDestroyNotify)group_free);
  for (guint i = 0; i < rp->runs->len; i++) {
    tp_run_result *r = g_ptr_array_index(rp->runs, i);
    group *g = NULL;
    for (guint j = 0; j < rp->groups->len && !g; j++) {
      group *c = g_ptr_array_index(rp->groups, j);
      if (g_strcmp0(c->sweep, r->sweep) == 0) g = c;
    }
    if (!g) {
      g = g_new0(group, 1);
      g->sweep = g_strdup(r->sweep);
      g->runs = g_ptr_array_new();
      g_ptr_array_add(rp->groups, g);
    }
    g_ptr_array_add(g->runs, r);
    if (!g->study && r->study) g->study = g_strdup(r->study);
  }
  for (guint j = 0; j < rp->groups->len; j++) {
    group *g = g_ptr_array_index(rp->groups, j);
    if (!g->study) g->study = infer_study(g->runs);
    for (guint i = 0; i < g->runs->len; i++) {
      const tp_run_result *r = g_ptr_array_index(g->runs, i);
      if (isfinite(r->val_loss_best) && (!g->best || r->val_loss_best < g->best->val_loss_best))
        g->best = r;
    }
  }
}

/* The graded answer of a group, one sentence (plain text). */
static char *answer_text(const group *g) {
  const tp_run_result *b = g->best;
  if (!b) return g_strdup("no run has a finite validation loss");
  char *lr = tp_format_double(b->lr);
  char *s = g_strdup_printf(
      "best run %s (%s, max_len %d, lr %s, batch %d, subset %g): validation accuracy %.4f at "
      "its minimum validation loss %.4f (epoch %d); test accuracy %.4f, F1 %.4f",
      b->name, b->model, b->max_len, lr, b->batch, b->subset, b->val_acc_best, b->val_loss_best,
      b->best_epoch, b->test_acc, b->test_f1);
  g_free(lr);
  return s;
}

static char *group_heading(const group *g) {
  return g_strdup_printf("%s%s%s (%u run%s)", g->study ? tp_sweep_study_title(g->study) : "Runs",
                         g->sweep ? ": sweep " : "", g->sweep ? g->sweep : "", g->runs->len,
                         g->runs->len == 1 ? "" : "s");
}

/* ---- checks ---- */

static void check_splits(report *rp) {
  /* runs that declare different subsets cannot share a split */
  for (guint i = 0; i < rp->runs->len; i++) {
    const tp_run_result *a = g_ptr_array_index(rp->runs, i);
    for (guint j = i + 1; j < rp->runs->len; j++) {
      const tp_run_result *b = g_ptr_array_index(rp->runs, j);
      if (strcmp(a->split_hash, b->split_hash) == 0 && a->subset != b->subset)
        g_ptr_array_add(rp->warnings, g_strdup_printf(
            "runs %s (subset %g) and %s (subset %g) share the split %s (%lld training reviews): "
            "one of them did not train on the data it declares — a stale split, like the seed "
            "notebook's Problem 2", a->name, a->subset, b->name, b->subset, a->split_hash,
            (long long)a->n_train));
    }
  }
  for (guint i = 0; i < rp->runs->len; i++) {
    const tp_run_result *a = g_ptr_array_index(rp->runs, i);
    for (guint j = i + 1; j < rp->runs->len; j++) {
      const tp_run_result *b = g_ptr_array_index(rp->runs, j);
      if (g_strcmp0(a->sweep, b->sweep) == 0 && strcmp(a->name, b->name) == 0)
        g_ptr_array_add(rp->warnings, g_strdup_printf(
            "run %s appears twice (%s and %s): both are listed", a->name, a->dir, b->dir));
    }
  }
}

/* ---- gnuplot ---- */

static void gp_quote(GString *s, const char *text) {
  g_string_append_c(s, '"');
  for (const char *p = text; *p; p++) {
    if (*p == '"' || *p == '\\') g_string_append_c(s, '\\');
    g_string_append_c(s, *p);
  }
  g_string_append_c(s, '"');
}

static void gp_head(GString *gp, const char *file, const char *title, const char *xl, const char *yl) {
  g_string_append_printf(gp, "reset\nset terminal svg size 820,480 fixed noenhanced font "
                             "'DejaVu Sans,12' background rgb 'white'\nset output '%s'\n", file);
  g_string_append(gp, "set title ");
  gp_quote(gp, title);
  g_string_append(gp, "\nset xlabel ");
  gp_quote(gp, xl);
  g_string_append(gp, "\nset ylabel ");
  gp_quote(gp, yl);
  g_string_append(gp, "\nset grid\nset key outside right top\n");
}

static bool group_has(const group *g, const char *study) { return g->study && !strcmp(g->study, study); }

static guint count_study(const report *rp, const char *study) {
  guint n = 0;
  for (guint j = 0; j < rp->groups->len; j++) n += group_has(g_ptr_array_index(rp->groups, j), study);
  return n;
}

/* Validation loss per epoch, every run. */
static void plot_val_loss(report *rp, GString *gp, GString *dat) {
  plot *p = &rp->plots[PLOT_VAL_LOSS];
  gp_head(gp, p->file, p->title, "epoch", "validation loss");
  g_string_append(gp, "set xtics 1\nplot ");
  guint block = 0;
  for (guint i = 0; i < rp->runs->len; i++) {
    const tp_run_result *r = g_ptr_array_index(rp->runs, i);
    for (guint e = 0; e < r->val_loss->len; e++)
      g_string_append_printf(dat, "%u %.9g\n", e + 1, g_array_index(r->val_loss, double, e));
    g_string_append(dat, "\n\n");
    /* 8 colours, then the same colours dashed, then dotted ... */
    g_string_append_printf(gp, "%s'val_loss.dat' index %u with linespoints pt %u lw 2 dt %u title ",
                           block ? ", " : "", block, 7 + 2 * ((block / 8) % 4), 1 + (block / 8) % 5);
    char *title = rp->groups->len > 1 && r->sweep ? g_strdup_printf("%s/%s", r->sweep, r->name)
                                                  : g_strdup(r->name);
    gp_quote(gp, title);
    g_free(title);
    block++;
  }
  g_string_append(gp, "\n");
  p->drawn = block > 0;
}

/* Accuracy vs max length, one line per learning rate (of each max_len_lr sweep). */
static void plot_maxlen(report *rp, GString *gp, GString *dat) {
  plot *p = &rp->plots[PLOT_MAXLEN];
  bool several = count_study(rp, "max_len_lr") > 1;
  guint block = 0;
  GString *cmd = g_string_new("plot ");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    if (!group_has(g, "max_len_lr")) continue;
    GArray *lrs = g_array_new(FALSE, FALSE, sizeof(double));
    for (guint i = 0; i < g->runs->len; i++) {
      double lr = ((const tp_run_result *)g_ptr_array_index(g->runs, i))->lr;
      bool seen = false;
      for (guint k = 0; k < lrs->len; k++) seen |= g_array_index(lrs, double, k) == lr;
      if (!seen) g_array_append_val(lrs, lr);
    }
    for (guint k = 0; k < lrs->len; k++) {
      double lr = g_array_index(lrs, double, k);
      /* points of this lr in max_len order */
      GPtrArray *pts = g_ptr_array_new();
      for (guint i = 0; i < g->runs->len; i++) {
        tp_run_result *r = g_ptr_array_index(g->runs, i);
        if (r->lr == lr) g_ptr_array_add(pts, r);
      }
      for (guint a = 0; a < pts->len; a++)
        for (guint b = a + 1; b < pts->len; b++)
          if (((tp_run_result *)pts->pdata[b])->max_len < ((tp_run_result *)pts->pdata[a])->max_len) {
            gpointer t = pts->pdata[a];
            pts->pdata[a] = pts->pdata[b];
            pts->pdata[b] = t;
          }
      for (guint a = 0; a < pts->len; a++) {
        const tp_run_result *r = pts->pdata[a];
        g_string_append_printf(dat, "%d %.9g\n", r->max_len, r->val_acc_best);
      }
      g_string_append(dat, "\n\n");
      char *lrs_t = tp_format_double(lr);
      char *title = several ? g_strdup_printf("%s: lr %s", g->sweep, lrs_t) : g_strdup_printf("lr %s", lrs_t);
      g_string_append_printf(cmd, "%s'acc_vs_maxlen.dat' index %u with linespoints pt 7 ps 1.3 lw 2 title ",
                             block ? ", " : "", block);
      gp_quote(cmd, title);
      g_free(title);
      g_free(lrs_t);
      g_ptr_array_unref(pts);
      block++;
    }
    g_array_unref(lrs);
  }
  if (block) {
    gp_head(gp, p->file, p->title, "max length (tokens)", "validation accuracy at min val loss");
    g_string_append_printf(gp, "set logscale x 2\nset offsets graph 0.08, graph 0.08, graph 0.1, graph 0.1\n%s\n", cmd->str);
  } else {
    p->why_not = g_strdup("no max length × learning rate study among the runs");
  }
  p->drawn = block > 0;
  g_string_free(cmd, TRUE);
}

/* Accuracy (left axis) and training time (right axis) vs training set size. */
static void plot_data(report *rp, GString *gp, GString *dat) {
  plot *p = &rp->plots[PLOT_DATA];
  bool several = count_study(rp, "data_size") > 1;
  guint block = 0;
  GString *cmd = g_string_new("plot ");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    if (!group_has(g, "data_size")) continue;
    GPtrArray *pts = g_ptr_array_copy(g->runs, NULL, NULL);
    for (guint a = 0; a < pts->len; a++)
      for (guint b = a + 1; b < pts->len; b++)
        if (((tp_run_result *)pts->pdata[b])->n_train < ((tp_run_result *)pts->pdata[a])->n_train) {
          gpointer t = pts->pdata[a];
          pts->pdata[a] = pts->pdata[b];
          pts->pdata[b] = t;
        }
    for (guint a = 0; a < pts->len; a++) {
      const tp_run_result *r = pts->pdata[a];
      g_string_append_printf(dat, "%lld %.9g %.9g %g\n", (long long)r->n_train, r->val_acc_best,
                             r->train_s, r->subset);
    }
    g_string_append(dat, "\n\n");
    char *acc = several ? g_strdup_printf("%s: validation accuracy", g->sweep) : g_strdup("validation accuracy");
    char *tim = several ? g_strdup_printf("%s: training time", g->sweep) : g_strdup("training time (s)");
    g_string_append_printf(cmd, "%s'data_size.dat' index %u using 1:2 axes x1y1 with linespoints pt 7 ps 1.3 lw 2 title ",
                           block ? ", " : "", block);
    gp_quote(cmd, acc);
    g_string_append_printf(cmd, ", 'data_size.dat' index %u using 1:3 axes x1y2 with linespoints pt 5 ps 1.1 lw 2 dt 2 title ", block);
    gp_quote(cmd, tim);
    g_free(acc);
    g_free(tim);
    g_ptr_array_unref(pts);
    block++;
  }
  if (block) {
    gp_head(gp, p->file, p->title, "training reviews", "validation accuracy at min val loss");
    g_string_append_printf(gp, "set y2label 'training time (s)'\nset ytics nomirror\nset y2tics\n"
                               "set key below\nset offsets graph 0.05, graph 0.05, graph 0.1, graph 0.1\n%s\n", cmd->str);
  } else {
    p->why_not = g_strdup("no data-size study among the runs");
  }
  p->drawn = block > 0;
  g_string_free(cmd, TRUE);
}

/* Accuracy vs seconds per epoch, one labelled point per run of a model study. */
static void plot_models(report *rp, GString *gp, GString *dat) {
  plot *p = &rp->plots[PLOT_MODELS];
  guint block = 0;
  GString *cmd = g_string_new("plot ");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    if (!group_has(g, "model")) continue;
    for (guint i = 0; i < g->runs->len; i++) {
      const tp_run_result *r = g_ptr_array_index(g->runs, i);
      GString *label = g_string_new(NULL);
      gp_quote(label, r->model);
      g_string_append_printf(dat, "%.9g %.9g %.9g %s\n", r->s_per_epoch, r->val_acc_best,
                             r->test_f1, label->str);
      g_string_free(label, TRUE);
    }
    g_string_append(dat, "\n\n");
    char *t1 = g_strdup_printf("%s%svalidation accuracy", g->sweep ? g->sweep : "", g->sweep ? ": " : "");
    char *t2 = g_strdup_printf("%s%stest F1", g->sweep ? g->sweep : "", g->sweep ? ": " : "");
    g_string_append_printf(cmd, "%s'models.dat' index %u using 1:2 with points pt 7 ps 1.6 title ",
                           block ? ", " : "", block);
    gp_quote(cmd, t1);
    g_string_append_printf(cmd, ", 'models.dat' index %u using 1:3 with points pt 9 ps 1.6 title ", block);
    gp_quote(cmd, t2);
    g_string_append_printf(cmd, ", 'models.dat' index %u using 1:2:4 with labels offset 0,1.2 notitle", block);
    g_free(t1);
    g_free(t2);
    block++;
  }
  if (block) {
    gp_head(gp, p->file, p->title, "seconds per training epoch", "accuracy / F1");
    g_string_append_printf(gp, "set key below\nset offsets graph 0.15, graph 0.15, graph 0.15, graph 0.1\n%s\n", cmd->str);
  } else {
    p->why_not = g_strdup("no model-swap study among the runs");
  }
  p->drawn = block > 0;
  g_string_free(cmd, TRUE);
}

static bool write_text(const char *dir, const char *name, const GString *s, GError **err) {
  char *path = g_build_filename(dir, name, NULL);
  bool ok = g_file_set_contents(path, s->str, (gssize)s->len, err);
  g_free(path);
  return ok;
}

static bool draw_plots(report *rp, GError **err) {
  static const struct { const char *file, *title; } what[N_PLOTS] = {
      {"val_loss.svg", "Validation loss per epoch"},
      {"acc_vs_maxlen.svg", "Accuracy vs max length, per learning rate"},
      {"data_size.svg", "Accuracy and training time vs data size"},
      {"models.svg", "Model comparison: accuracy vs time per epoch"},
  };
  for (int i = 0; i < N_PLOTS; i++) rp->plots[i] = (plot){.file = what[i].file, .title = what[i].title};
  char *dir = g_build_filename(rp->out, "plots", NULL);
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", dir, g_strerror(errno));
    g_free(dir);
    return false;
  }
  GString *gp = g_string_new("# drawn by tensorplug report; run `gnuplot plots.gp` in this folder\n");
  GString *dat[N_PLOTS];
  for (int i = 0; i < N_PLOTS; i++) dat[i] = g_string_new(NULL);
  plot_val_loss(rp, gp, dat[PLOT_VAL_LOSS]);
  plot_maxlen(rp, gp, dat[PLOT_MAXLEN]);
  plot_data(rp, gp, dat[PLOT_DATA]);
  plot_models(rp, gp, dat[PLOT_MODELS]);
  static const char *const dat_names[N_PLOTS] = {"val_loss.dat", "acc_vs_maxlen.dat", "data_size.dat",
                                                 "models.dat"};
  bool ok = write_text(dir, "plots.gp", gp, err);
  for (int i = 0; ok && i < N_PLOTS; i++) {
    char *svg = g_build_filename(dir, rp->plots[i].file, NULL);
    g_unlink(svg); /* a stale plot from an earlier report must not survive */
    g_free(svg);
    if (rp->plots[i].drawn) ok = write_text(dir, dat_names[i], dat[i], err);
  }
  if (ok) {
    char *argv[] = {(char *)"gnuplot", (char *)"plots.gp", NULL};
    char *se = NULL;
    int status = 0;
    GError *serr = NULL;
    if (!g_spawn_sync(dir, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                      NULL, &se, &status, &serr)) {
      g_set_error(err, TP_ERROR, TP_ERROR_UNAVAILABLE, "cannot run gnuplot (%s): install it "
                  "(Debian: apt-get install gnuplot-nox); the tables are written", serr->message);
      g_error_free(serr);
      ok = false;
    } else if (!g_spawn_check_wait_status(status, NULL)) {
      g_set_error(err, TP_ERROR, TP_ERROR_IO, "gnuplot failed on %s/plots.gp: %s", dir, se ? se : "");
      ok = false;
    }
    g_free(se);
  }
  for (int i = 0; i < N_PLOTS; i++) g_string_free(dat[i], TRUE);
  g_string_free(gp, TRUE);
  g_free(dir);
  return ok;
}

/* ---- tables ---- */

typedef enum { FMT_CSV, FMT_MD, FMT_HTML } fmt;

static const char *const columns[] = {
    "sweep", "study", "run", "model", "max_len", "lr", "batch", "subset", "train", "val", "test",
    "split_hash", "best_epoch", "val_acc_best", "val_loss_best", "test_acc", "test_f1",
    "s_per_epoch", "train_s", "total_s", "backend", "device", "commit", "note"};
#define N_COLS G_N_ELEMENTS(columns)

static const char *const headings[N_COLS] = {
    "sweep", "study", "run", "model", "max len", "lr", "batch", "subset", "train", "val", "test",
    "split hash", "best epoch", "val acc @ best", "val loss @ best", "test acc", "F1", "s/epoch",
    "train time", "total time", "backend/device", "", "commit", "note"};

static const group *group_of(const report *rp, const tp_run_result *r) {
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    if (g_ptr_array_find(g->runs, r, NULL)) return g;
  }
  return NULL;
}

/* A cell: exact (round-trip) numbers for CSV/JSON, rounded ones for people. */
static char *cell(const report *rp, const tp_run_result *r, guint c, bool exact) {
  const group *g = group_of(rp, r);
  const char *k = columns[c];
  if (!strcmp(k, "sweep")) return g_strdup(r->sweep ? r->sweep : "");
  if (!strcmp(k, "study")) return g_strdup(g && g->study ? g->study : "");
  if (!strcmp(k, "run")) return g_strdup(r->name);
  if (!strcmp(k, "model")) return g_strdup(r->model);
  if (!strcmp(k, "max_len")) return g_strdup_printf("%d", r->max_len);
  if (!strcmp(k, "lr")) return tp_format_double(r->lr);
  if (!strcmp(k, "batch")) return g_strdup_printf("%d", r->batch);
  if (!strcmp(k, "subset")) return tp_format_double(r->subset);
  if (!strcmp(k, "train")) return g_strdup_printf("%lld", (long long)r->n_train);
  if (!strcmp(k, "val")) return g_strdup_printf("%lld", (long long)r->n_val);
  if (!strcmp(k, "test")) return g_strdup_printf("%lld", (long long)r->n_test);
  if (!strcmp(k, "split_hash")) return g_strdup(r->split_hash);
  if (!strcmp(k, "best_epoch")) return g_strdup_printf("%d", r->best_epoch);
  if (!strcmp(k, "backend")) return g_strdup(r->backend ? r->backend : "");
  if (!strcmp(k, "device")) return g_strdup(r->device ? r->device : "");
  if (!strcmp(k, "commit")) return g_strdup(r->commit ? r->commit : "");
  if (!strcmp(k, "note")) return g_strdup(r->note ? r->note : "");
  double v = !strcmp(k, "val_acc_best") ? r->val_acc_best
           : !strcmp(k, "val_loss_best") ? r->val_loss_best
           : !strcmp(k, "test_acc") ? r->test_acc
           : !strcmp(k, "test_f1") ? r->test_f1
           : !strcmp(k, "s_per_epoch") ? r->s_per_epoch
           : !strcmp(k, "train_s") ? r->train_s : r->total_s;
  if (exact) return tp_format_double(v);
  if (g_str_has_suffix(k, "_s") || !strcmp(k, "s_per_epoch")) {
    if (strcmp(k, "s_per_epoch") == 0) return g_strdup_printf("%.1f", v);
    return tp_cli_hms(v);
  }
  return g_strdup_printf("%.4f", v);
}

static void csv_field(GString *s, const char *v) {
  if (strpbrk(v, ",\"\n")) {
    g_string_append_c(s, '"');
    for (const char *p = v; *p; p++) {
      if (*p == '"') g_string_append_c(s, '"');
      g_string_append_c(s, *p);
    }
    g_string_append_c(s, '"');
  } else {
    g_string_append(s, v);
  }
}

static GString *summary_csv(const report *rp) {
  GString *s = g_string_new(NULL);
  for (guint c = 0; c < N_COLS; c++) g_string_append_printf(s, "%s%s", c ? "," : "", columns[c]);
  g_string_append_c(s, '\n');
  for (guint i = 0; i < rp->runs->len; i++) {
    for (guint c = 0; c < N_COLS; c++) {
      char *v = cell(rp, g_ptr_array_index(rp->runs, i), c, true);
      if (c) g_string_append_c(s, ',');
      csv_field(s, v);
      g_free(v);
    }
    g_string_append_c(s, '\n');
  }
  return s;
}

static JsonNode *summary_json(const report *rp) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "runs");
  json_builder_begin_array(b);
  for (guint i = 0; i < rp->runs->len; i++) {
    const tp_run_result *r = g_ptr_array_index(rp->runs, i);
    json_builder_begin_object(b);
    for (guint c = 0; c < N_COLS; c++) {
      char *v = cell(rp, r, c, true);
      json_builder_set_member_name(b, columns[c]);
      char *end = NULL;
      double d = g_ascii_strtod(v, &end);
      bool text = !strcmp(columns[c], "split_hash") || !strcmp(columns[c], "commit") ||
                  !strcmp(columns[c], "run") || !strcmp(columns[c], "model") ||
                  !strcmp(columns[c], "sweep");
      if (!text && *v && end && !*end && isfinite(d)) json_builder_add_double_value(b, d);
      else if (!text && *v && end && !*end) json_builder_add_null_value(b);
      else json_builder_add_string_value(b, v);
      g_free(v);
    }
    json_builder_set_member_name(b, "dir");
    json_builder_add_string_value(b, r->dir);
    json_builder_set_member_name(b, "val_loss_per_epoch");
    json_builder_begin_array(b);
    for (guint e = 0; e < r->val_loss->len; e++) {
      double v = g_array_index(r->val_loss, double, e);
      if (isfinite(v)) json_builder_add_double_value(b, v);
      else json_builder_add_null_value(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "answers");
  json_builder_begin_array(b);
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    if (!g->study || !g->best) continue;
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "sweep");
    if (g->sweep) json_builder_add_string_value(b, g->sweep);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "study");
    json_builder_add_string_value(b, g->study);
    json_builder_set_member_name(b, "best_run");
    json_builder_add_string_value(b, g->best->name);
    json_builder_set_member_name(b, "val_acc_at_min_val_loss");
    json_builder_add_double_value(b, g->best->val_acc_best);
    json_builder_set_member_name(b, "min_val_loss");
    json_builder_add_double_value(b, g->best->val_loss_best);
    json_builder_set_member_name(b, "best_epoch");
    json_builder_add_int_value(b, g->best->best_epoch);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "warnings");
  json_builder_begin_array(b);
  for (guint i = 0; i < rp->warnings->len; i++) json_builder_add_string_value(b, g_ptr_array_index(rp->warnings, i));
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonNode *n = json_builder_get_root(b);
  g_object_unref(b);
  return n;
}

/* The columns people read (study and sweep are the section's). */
static bool shown(guint c) {
  const char *k = columns[c];
  return strcmp(k, "sweep") && strcmp(k, "study") && strcmp(k, "device") && strcmp(k, "val_loss_best");
}

static char *backend_device(const tp_run_result *r) {
  return g_strdup_printf("%s/%s", r->backend ? r->backend : "?", r->device ? r->device : "?");
}

static GString *report_md(const report *rp) {
  GString *s = g_string_new("# tensorplug report\n\n");
  for (guint i = 0; i < rp->warnings->len; i++)
    g_string_append_printf(s, "> **Warning:** %s\n\n", (const char *)g_ptr_array_index(rp->warnings, i));
  g_string_append(s, "## Answers\n\n");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    char *h = group_heading(g);
    if (g->study) {
      char *a = answer_text(g);
      g_string_append_printf(s, "- **%s**: %s.\n", h, a);
      g_free(a);
    } else {
      g_string_append_printf(s, "- %s: no study recognised (nothing varies across its runs).\n", h);
    }
    g_free(h);
  }
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    char *h = group_heading(g);
    g_string_append_printf(s, "\n## %s\n\n|", h);
    g_free(h);
    for (guint c = 0; c < N_COLS; c++)
      if (shown(c)) g_string_append_printf(s, " %s |", headings[c]);
    g_string_append(s, "\n|");
    for (guint c = 0; c < N_COLS; c++)
      if (shown(c)) g_string_append(s, " --- |");
    g_string_append_c(s, '\n');
    for (guint i = 0; i < g->runs->len; i++) {
      const tp_run_result *r = g_ptr_array_index(g->runs, i);
      g_string_append_c(s, '|');
      for (guint c = 0; c < N_COLS; c++) {
        if (!shown(c)) continue;
        char *v = !strcmp(columns[c], "backend") ? backend_device(r) : cell(rp, r, c, false);
        bool best = r == g->best && !strcmp(columns[c], "val_acc_best");
        g_string_append_printf(s, " %s%s%s |", best ? "**" : "", v, best ? "**" : "");
        g_free(v);
      }
      g_string_append_c(s, '\n');
    }
  }
  g_string_append(s, "\n## Plots\n\n");
  for (int i = 0; i < N_PLOTS; i++) {
    const plot *p = &rp->plots[i];
    if (p->drawn) g_string_append_printf(s, "![%s](plots/%s)\n\n", p->title, p->file);
    else g_string_append_printf(s, "- %s: not drawn (%s)\n\n", p->title, p->why_not ? p->why_not : "gnuplot did not run");
  }
  g_string_append(s, "Columns: *val acc @ best* is the validation accuracy of the epoch with the "
                     "lowest validation loss (the weights kept); *split hash* identifies the "
                     "train/val/test ids the run used (the first 12 hex digits of SHA-256 over "
                     "its three split hashes).\n");
  return s;
}

static void html_text(GString *s, const char *t) {
  char *e = g_markup_escape_text(t, -1);
  g_string_append(s, e);
  g_free(e);
}

static bool html_plot(GString *s, const char *dir, const plot *p, GError **err) {
  char *path = g_build_filename(dir, "plots", p->file, NULL);
  char *data = NULL;
  gsize len = 0;
  bool ok = g_file_get_contents(path, &data, &len, err);
  if (ok) {
    char *b64 = g_base64_encode((const guchar *)data, len);
    g_string_append(s, "<figure><img alt=\"");
    html_text(s, p->title);
    g_string_append_printf(s, "\" src=\"data:image/svg+xml;base64,%s\"><figcaption>", b64);
    html_text(s, p->title);
    g_string_append(s, "</figcaption></figure>\n");
    g_free(b64);
  }
  g_free(data);
  g_free(path);
  return ok;
}

static bool report_html(const report *rp, GString *s, GError **err) {
  g_string_append(s,
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<title>tensorplug report</title>\n<style>\n"
      "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:1.5em 2em;color:#222}\n"
      "h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}\n"
      "table{border-collapse:collapse;font-size:0.82em;margin:0.5em 0}\n"
      "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}\n"
      "th{background:#f0f0f0}td.t{text-align:left}tr.best td{background:#e8f4e8;font-weight:bold}\n"
      ".warn{background:#fff3cd;border:1px solid #e0b000;padding:0.5em 1em;margin:0.5em 0}\n"
      "figure{display:inline-block;vertical-align:top;margin:0.5em 1em 1em 0}figcaption{font-size:0.85em;color:#555}\n"
      "img{width:820px;max-width:100%;height:auto;border:1px solid #ddd}li{margin:0.3em 0}\n"
      "div.scroll{overflow-x:auto}\n"
      "</style></head><body>\n<h1>tensorplug report</h1>\n");
  for (guint i = 0; i < rp->warnings->len; i++) {
    g_string_append(s, "<p class=\"warn\"><b>Warning:</b> ");
    html_text(s, g_ptr_array_index(rp->warnings, i));
    g_string_append(s, "</p>\n");
  }
  g_string_append(s, "<h2>Answers</h2>\n<ul>\n");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    char *h = group_heading(g);
    char *a = g->study ? answer_text(g) : g_strdup("no study recognised (nothing varies across its runs)");
    g_string_append(s, "<li><b>");
    html_text(s, h);
    g_string_append(s, "</b>: ");
    html_text(s, a);
    g_string_append(s, ".</li>\n");
    g_free(a);
    g_free(h);
  }
  g_string_append(s, "</ul>\n");
  for (guint j = 0; j < rp->groups->len; j++) {
    const group *g = g_ptr_array_index(rp->groups, j);
    char *h = group_heading(g);
    g_string_append(s, "<h2>");
    html_text(s, h);
    g_string_append(s, "</h2>\n<div class=\"scroll\"><table>\n<tr>");
    g_free(h);
    for (guint c = 0; c < N_COLS; c++) {
      if (!shown(c)) continue;
      g_string_append(s, "<th>");
      html_text(s, headings[c]);
      g_string_append(s, "</th>");
    }
    g_string_append(s, "</tr>\n");
    for (guint i = 0; i < g->runs->len; i++) {
      const tp_run_result *r = g_ptr_array_index(g->runs, i);
      g_string_append_printf(s, "<tr class=\"run%s\">", r == g->best ? " best" : "");
      for (guint c = 0; c < N_COLS; c++) {
        if (!shown(c)) continue;
        const char *k = columns[c];
        bool text = !strcmp(k, "run") || !strcmp(k, "model") || !strcmp(k, "note") ||
                    !strcmp(k, "backend") || !strcmp(k, "split_hash") || !strcmp(k, "commit");
        char *v = !strcmp(k, "backend") ? backend_device(r) : cell(rp, r, c, false);
        g_string_append(s, text ? "<td class=\"t\">" : "<td>");
        html_text(s, v);
        g_string_append(s, "</td>");
        g_free(v);
      }
      g_string_append(s, "</tr>\n");
    }
    g_string_append(s, "</table></div>\n");
  }
  g_string_append(s, "<h2>Plots</h2>\n");
  bool ok = true;
  for (int i = 0; ok && i < N_PLOTS; i++) {
    const plot *p = &rp->plots[i];
    if (p->drawn) ok = html_plot(s, rp->out, p, err);
    else {
      g_string_append(s, "<p>");
      html_text(s, p->title);
      g_string_append(s, ": not drawn (");
      html_text(s, p->why_not ? p->why_not : "gnuplot did not run");
      g_string_append(s, ").</p>\n");
    }
  }
  g_string_append(s, "<p style=\"font-size:0.85em;color:#555\">val acc @ best: the validation "
                     "accuracy of the epoch with the lowest validation loss (the weights kept). "
                     "Split hash: the first 12 hex digits of SHA-256 over the run's three split "
                     "hashes (results.json), read from the run itself.</p>\n</body></html>\n");
  return ok;
}

static int run_report(const report_opts *o, char **dirs) {
  GError *err = NULL;
  report rp = {.out = o->out, .warnings = g_ptr_array_new_with_free_func(g_free)};
  rp.runs = tp_run_results_find((const char *const *)dirs, &err);
  if (!rp.runs) {
    g_ptr_array_unref(rp.warnings);
    return tp_cli_report(err);
  }
  int rc = TP_EXIT_OK;
  if (rp.runs->len == 0) {
    char *all = g_strjoinv(", ", dirs);
    g_set_error(&err, TP_ERROR, TP_ERROR_IO, "no finished run (no results.json) under %s", all);
    g_free(all);
    rc = tp_cli_report(err);
    goto out;
  }
  make_groups(&rp);
  check_splits(&rp);
  if (g_mkdir_with_parents(o->out, 0755) != 0) {
    g_set_error(&err, TP_ERROR, TP_ERROR_IO, "cannot create %s: %s", o->out, g_strerror(errno));
    rc = tp_cli_report(err);
    goto out;
  }
  GError *plot_err = NULL;
  draw_plots(&rp, &plot_err); /* the tables are written even without plots */
  if (plot_err)
    for (int i = 0; i < N_PLOTS; i++) rp.plots[i].drawn = false;
  GString *csv = summary_csv(&rp);
  GString *md = report_md(&rp);
  GString *html = g_string_new(NULL);
  JsonNode *js = summary_json(&rp);
  char *jp = g_build_filename(o->out, "summary.json", NULL);
  bool ok = write_text(o->out, "summary.csv", csv, &err) && tp_cli_write_json(jp, js, &err) &&
            write_text(o->out, "report.md", md, &err) && report_html(&rp, html, &err) &&
            write_text(o->out, "report.html", html, &err);
  g_free(jp);
  json_node_unref(js);
  g_string_free(csv, TRUE);
  g_string_free(md, TRUE);
  g_string_free(html, TRUE);
  for (guint i = 0; i < rp.warnings->len; i++)
    fprintf(stderr, "tensorplug: warning: %s\n", (const char *)g_ptr_array_index(rp.warnings, i));
  if (ok) {
    for (guint j = 0; j < rp.groups->len; j++) {
      const group *g = g_ptr_array_index(rp.groups, j);
      char *h = group_heading(g);
      char *a = g->study ? answer_text(g) : g_strdup("no study recognised");
      printf("%s: %s\n", h, a);
      g_free(a);
      g_free(h);
    }
    printf("%u runs: %s/summary.csv, summary.json, report.md, report.html\n", rp.runs->len, o->out);
  }
  if (!ok) rc = tp_cli_report(err);
  else if (plot_err) rc = tp_cli_report(plot_err);
  else g_clear_error(&plot_err);
out:
  if (rp.groups) g_ptr_array_unref(rp.groups);
  g_ptr_array_unref(rp.runs);
  g_ptr_array_unref(rp.warnings);
  for (int i = 0; i < N_PLOTS; i++) g_free(rp.plots[i].why_not);
  return rc;
}

static const tp_cli_opt report_rows[] = {
    {.name = "out", .kind = TP_OPT_PATH, .offset = offsetof(report_opts, out), .arg = "DIR",
     .help = "Where summary.csv, summary.json, report.md, report.html and plots/ go",
     .shown_def = "the folder, when one is given"},
};

int tp_cmd_report(int argc, char **argv) {
  report_opts o = {0};
  tp_cli_optset *set = tp_cli_optset_new("DIR...",
      "Collects every run (a folder holding a results.json) under the folders — sweeps,\n"
      "their shards, single train runs — into one table (summary.csv, summary.json,\n"
      "report.md, report.html with the plots inlined), draws the plots with gnuplot\n"
      "(validation loss per epoch; accuracy vs max length per lr; accuracy and training\n"
      "time vs data size; accuracy vs time per epoch per model) and states the graded\n"
      "answer of each study it recognises: the run with the lowest validation loss and\n"
      "its validation accuracy at that epoch.",
      "Example:\n  tensorplug report runs/problem1 runs/problem2 runs/problem3 --out runs/report\n\n"
      "Exit status: 0 written, 1 unreadable results, 2 bad usage or gnuplot missing.");
  tp_cli_optset_add(set, "Options", report_rows, G_N_ELEMENTS(report_rows), &o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  tp_cli_optset_free(set);
  if (rc < 0) {
    if (argc < 2) {
      fprintf(stderr, "tensorplug: error: give at least one folder (a sweep's --out, or runs/)\n");
      rc = TP_EXIT_USAGE;
    } else if (!o.out && argc > 2) {
      fprintf(stderr, "tensorplug: error: with several folders, say where the report goes: --out DIR\n");
      rc = TP_EXIT_USAGE;
    } else {
      if (!o.out) o.out = g_strdup(argv[1]);
      rc = run_report(&o, argv + 1);
    }
  }
  g_free(o.out);
  return rc;
}
