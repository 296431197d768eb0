/* tests/test_distributed.c — `tensorplug train --distributed` under mpirun
 * (Open MPI), against one process on real IMDB records with a tiny BERT
 * that learns within one epoch:
 *  - 2 ranks on loopback give the one-process run's per-epoch losses,
 *    accuracies, test metrics (relative difference <= 1e-5) and final
 *    parameters and Adam moments (within 1e-5);
 *  - --grad-accum 2 gives the run of one batch twice the size, alone and
 *    on 2 ranks;
 *  - 2 ranks in two network namespaces joined by a veth pair (Open MPI over
 *    TCP between them, as between two machines) give the same;
 *  - killing a rank mid-epoch ends the job within 10 s with a message naming
 *    the rank and exit status 1; --resume on 1 rank finishes the run;
 *  - a rank that stops answering ends the job after --dist-timeout;
 *  - usage: mpirun without --distributed, --grad-accum out of range. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "tensorplug/safetensors.h"
#include "tp_test.h"

static char *exe(void) { return g_build_filename(tp_test_build_dir(), "cli", "tensorplug", NULL); }

static char *vocab(void) {
  return g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt", NULL);
}

static char *imdb(void) { return g_build_filename(tp_test_shared_dir(), "data", "imdb", NULL); }

/* argv for a tiny run into out: [mpirun ... -np N] tensorplug train ... */
static GPtrArray *train_argv(int ranks, const char *const *launcher, const char *out, int batch,
                             int accum, int epochs) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  if (ranks > 0) {
    g_ptr_array_add(a, g_strdup(TP_MPIRUN));
    const char *base[] = {"--allow-run-as-root", "--oversubscribe"};
    for (size_t i = 0; i < G_N_ELEMENTS(base); i++) g_ptr_array_add(a, g_strdup(base[i]));
    for (const char *const *l = launcher; l && *l; l++) g_ptr_array_add(a, g_strdup(*l));
    g_ptr_array_add(a, g_strdup("-np"));
    g_ptr_array_add(a, g_strdup_printf("%d", ranks));
  }
  char *v = vocab(), *d = imdb();
  const char *args[] = {"train", "--model", "bert", "--init", "random", "--layers", "1",
                        "--hidden", "32", "--heads", "2", "--ffn", "64", "--vocab", v, "--data",
                        d, "--subset", "0.16", "--max-len", "64", "--eval-batch", "64",
                        "--patience", "0", "--lr", "1e-3", "--seed", "7", "--threads", "1",
                        "--out", out};
  g_ptr_array_add(a, exe());
  for (size_t i = 0; i < G_N_ELEMENTS(args); i++) g_ptr_array_add(a, g_strdup(args[i]));
  g_ptr_array_add(a, g_strdup("--batch"));
  g_ptr_array_add(a, g_strdup_printf("%d", batch));
  g_ptr_array_add(a, g_strdup("--epochs"));
  g_ptr_array_add(a, g_strdup_printf("%d", epochs));
  if (accum > 1) {
    g_ptr_array_add(a, g_strdup("--grad-accum"));
    g_ptr_array_add(a, g_strdup_printf("%d", accum));
  }
  if (ranks > 0) g_ptr_array_add(a, g_strdup("--distributed"));
  g_free(v);
  g_free(d);
  return a;
}

static int run_argv(GPtrArray *a, char **out) {
  g_ptr_array_add(a, NULL);
  char *so = NULL, *se = NULL;
  int status = -1;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, (char **)a->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &so, &se, &status,
                    &err)) {
    TP_FAILF("spawn %s: %s", (char *)a->pdata[0], err->message);
    g_clear_error(&err);
  }
  if (out) *out = g_strconcat(so ? so : "", se ? se : "", NULL);
  g_free(so);
  g_free(se);
  g_ptr_array_unref(a);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs one training; FALSE (and a failure) unless it exits 0. */
static bool train(int ranks, const char *const *launcher, const char *out, int batch, int accum,
                  int epochs) {
  char *text = NULL;
  gint64 t0 = g_get_monotonic_time();
  int rc = run_argv(train_argv(ranks, launcher, out, batch, accum, epochs), &text);
  g_test_message("%d rank(s), batch %d, %d micro-batches: exit %d in %.1f s", ranks, batch,
                 accum, rc, (double)(g_get_monotonic_time() - t0) / 1e6);
  if (rc != 0) TP_FAILF("training into %s exited %d:\n%s", out, rc, text);
  g_free(text);
  return rc == 0;
}

/* The one-process reference run (batch 32, one epoch), shared by the tests. */
static const char *reference(void) {
  static char *dir;
  if (!dir) {
    char *d = g_build_filename(tp_test_tmpdir(), "single", NULL);
    if (!train(0, NULL, d, 32, 1, 1)) {
      g_free(d);
      return NULL;
    }
    dir = d;
  }
  return dir;
}

/* The same on 2 ranks over loopback. */
static const char *two_ranks(void) {
  static char *dir;
  if (!dir) {
    char *d = g_build_filename(tp_test_tmpdir(), "two", NULL);
    if (!train(2, NULL, d, 32, 1, 1)) {
      g_free(d);
      return NULL;
    }
    dir = d;
  }
  return dir;
}

/* ---- comparing two runs ---- */

static JsonObject *load_json(const char *dir, const char *name, JsonParser **keep) {
  char *p = g_build_filename(dir, name, NULL);
  *keep = json_parser_new();
  GError *err = NULL;
  JsonObject *o = NULL;
  if (json_parser_load_from_file(*keep, p, &err)) o = json_node_get_object(json_parser_get_root(*keep));
  else TP_FAILF("%s: %s", p, err->message);
  g_clear_error(&err);
  g_free(p);
  return o;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(a), 1e-30); }

static void close_enough(const char *what, double a, double b) {
  if (!(rel(a, b) <= 1e-5)) TP_FAILF("%s: %.12g vs %.12g (relative %.3g > 1e-5)", what, a, b, rel(a, b));
}

/* The checkpoint's flat buffers: largest |a - b| of each. */
static void same_parameters(const char *da, const char *db) {
  char *pa = g_build_filename(da, "checkpoint", "state.safetensors", NULL);
  char *pb = g_build_filename(db, "checkpoint", "state.safetensors", NULL);
  GError *err = NULL;
  tp_safetensors *a = tp_safetensors_open(pa, &err), *b = a ? tp_safetensors_open(pb, &err) : NULL;
  if (!b) {
    TP_FAILF("checkpoints: %s", err->message);
    g_clear_error(&err);
  }
  static const char *const names[3] = {"values", "adam_m", "adam_v"};
  for (int i = 0; b && i < 3; i++) {
    const tp_st_tensor *ta = tp_safetensors_find(a, names[i]), *tb = tp_safetensors_find(b, names[i]);
    TP_ASSERT(ta && tb && ta->numel == tb->numel && ta->numel > 1000);
    float *x = g_new(float, ta->numel), *y = g_new(float, tb->numel);
    memcpy(x, ta->data, (size_t)ta->numel * sizeof(float));
    memcpy(y, tb->data, (size_t)tb->numel * sizeof(float));
    double worst = 0, biggest = 0;
    for (int64_t j = 0; j < ta->numel; j++) {
      worst = fmax(worst, fabs((double)x[j] - y[j]));
      biggest = fmax(biggest, fabs((double)x[j]));
    }
    g_test_message("%s: largest difference %.3g (largest value %.3g)", names[i], worst, biggest);
    if (!(worst <= 1e-5)) TP_FAILF("%s differ by %.3g > 1e-5", names[i], worst);
    g_free(x);
    g_free(y);
  }
  if (a) tp_safetensors_close(a);
  if (b) tp_safetensors_close(b);
  g_free(pa);
  g_free(pb);
}

/* Two checkpoints hold the same bytes. */
static void same_bits(const char *da, const char *db) {
  char *pa = g_build_filename(da, "checkpoint", "state.safetensors", NULL);
  char *pb = g_build_filename(db, "checkpoint", "state.safetensors", NULL);
  char *a = NULL, *b = NULL;
  gsize la = 0, lb = 0;
  TP_CHECK(g_file_get_contents(pa, &a, &la, NULL) && g_file_get_contents(pb, &b, &lb, NULL));
  TP_CHECK(a && b && la == lb && la > 1000 && memcmp(a, b, la) == 0);
  g_free(a);
  g_free(b);
  g_free(pa);
  g_free(pb);
}

/* Per-epoch losses and accuracies, test metrics and final parameters; the
 * world sizes recorded. */
static void same_run(const char *one, const char *many, int ranks) {
  JsonParser *ja = NULL, *jb = NULL;
  JsonObject *a = load_json(one, "results.json", &ja), *b = load_json(many, "results.json", &jb);
  if (a && b) {
    JsonArray *ha = json_object_get_array_member(a, "history");
    JsonArray *hb = json_object_get_array_member(b, "history");
    TP_CHECK_INT_EQ(json_array_get_length(ha), json_array_get_length(hb));
    static const char *const keys[] = {"loss", "acc", "val_loss", "val_acc"};
    for (guint e = 0; e < MIN(json_array_get_length(ha), json_array_get_length(hb)); e++)
      for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
        double x = json_object_get_double_member(json_array_get_object_element(ha, e), keys[k]);
        double y = json_object_get_double_member(json_array_get_object_element(hb, e), keys[k]);
        char *what = g_strdup_printf("epoch %u %s", e + 1, keys[k]);
        close_enough(what, x, y);
        g_free(what);
      }
    JsonObject *ta = json_object_get_object_member(a, "test");
    JsonObject *tb = json_object_get_object_member(b, "test");
    close_enough("test accuracy", json_object_get_double_member(ta, "accuracy"),
                 json_object_get_double_member(tb, "accuracy"));
    close_enough("test loss", json_object_get_double_member(ta, "loss"),
                 json_object_get_double_member(tb, "loss"));
    JsonObject *ea = json_array_get_object_element(ha, 0);
    g_test_message("epoch 1: loss %.9g val_acc %.4g", json_object_get_double_member(ea, "loss"),
                   json_object_get_double_member(ea, "val_acc"));
    /* the model learned: equal accuracies are not both chance */
    TP_CHECK(json_object_get_double_member(ea, "val_acc") > 0.6);
    JsonObject *da = json_object_get_object_member(a, "distributed");
    JsonObject *db = json_object_get_object_member(b, "distributed");
    TP_CHECK(da && db);
    if (da && db) {
      TP_CHECK_INT_EQ(json_object_get_int_member(da, "world_size"), 1);
      TP_CHECK_INT_EQ(json_object_get_int_member(db, "world_size"), ranks);
      if (ranks > 1) TP_CHECK_STR_EQ(json_object_get_string_member(db, "gradient_sum"), "host");
    }
  }
  if (ja) g_object_unref(ja);
  if (jb) g_object_unref(jb);
  same_parameters(one, many);
}

TP_TEST(Distributed, TwoRanksMatchOneProcess) {
  const char *one = reference(), *two = two_ranks();
  if (one && two) same_run(one, two, 2);
}

TP_TEST(Distributed, GradAccumMatchesABatchTwiceTheSize) {
  /* --batch is the whole step's batch: --grad-accum 2 computes the batch of
   * 32 in two micro-batches of 16 (per rank: of 8) */
  const char *one = reference();
  char *acc = g_build_filename(tp_test_tmpdir(), "accum", NULL);
  char *acc2 = g_build_filename(tp_test_tmpdir(), "accum-2ranks", NULL);
  if (one && train(0, NULL, acc, 32, 2, 1)) same_run(one, acc, 1);
  if (one && train(2, NULL, acc2, 32, 2, 1)) same_run(one, acc2, 2);
  g_free(acc);
  g_free(acc2);
}

/* ---- two "machines": network namespaces joined by a veth pair ---- */

static bool sh(const char *cmd) {
  int status = -1;
  char *so = NULL, *se = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  GError *err = NULL;
  bool ok = g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &so, &se, &status, &err) &&
            WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!ok) g_test_message("`%s` failed: %s%s", cmd, err ? err->message : "", se ? se : "");
  g_clear_error(&err);
  g_free(so);
  g_free(se);
  return ok;
}

TP_TEST(Distributed, TwoNetworkNamespacesOverTcp) {
  int pid = (int)getpid();
  char *na = g_strdup_printf("tpd%da", pid), *nb = g_strdup_printf("tpd%db", pid);
  char *va = g_strdup_printf("tpv%da", pid), *vb = g_strdup_printf("tpv%db", pid);
  char *setup = g_strdup_printf(
      "set -e; ip netns add %s; ip netns add %s; ip link add %s type veth peer name %s; "
      "ip link set %s netns %s; ip link set %s netns %s; "
      "ip -n %s addr add 10.77.0.1/24 dev %s; ip -n %s addr add 10.77.0.2/24 dev %s; "
      "ip -n %s link set lo up; ip -n %s link set lo up; "
      "ip -n %s link set %s up; ip -n %s link set %s up",
      na, nb, va, vb, va, na, vb, nb, na, va, nb, vb, na, nb, na, va, nb, vb);
  if (!sh(setup)) {
    /* needs root (CAP_NET_ADMIN), as CI runs */
    TP_FAILF("could not create two network namespaces with a veth pair (root is needed): `%s`",
             setup);
  } else {
    /* mpirun runs in the first; it starts the second's Open MPI daemon
     * through this "remote shell", which enters the namespace of the host
     * address it is given */
    char *dir = tp_test_tmpdir();
    char *agent = g_build_filename(dir, "netns-rsh", NULL);
    char *script = g_strdup_printf(
        "#!/bin/sh\n"
        "while [ $# -gt 0 ]; do case \"$1\" in -*) shift;; *) break;; esac; done\n"
        "host=$1; shift\n"
        "case \"$host\" in 10.77.0.1) ns=%s;; 10.77.0.2) ns=%s;; *) echo \"no such host $host\" >&2; exit 1;; esac\n"
        "exec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n", na, nb);
    GError *err = NULL;
    TP_CHECK(g_file_set_contents(agent, script, -1, &err) && chmod(agent, 0755) == 0);
    const char *launcher[] = {"--host", "10.77.0.1:1,10.77.0.2:1", "--mca", "plm_rsh_agent", agent,
                              "--mca", "btl_tcp_if_include", "10.77.0.0/24", "--mca",
                              "oob_tcp_if_include", "10.77.0.0/24", "--mca", "btl", "self,tcp",
                              NULL};
    const char *one = reference(), *loop = two_ranks();
    char *two = g_build_filename(dir, "netns", NULL);
    GPtrArray *argv = train_argv(2, launcher, two, 32, 1, 1);
    /* "ip netns exec NS" in front of mpirun */
    const char *pre[] = {"ip", "netns", "exec", na};
    for (int i = 3; i >= 0; i--) g_ptr_array_insert(argv, 0, g_strdup(pre[i]));
    char *text = NULL;
    int rc = one ? run_argv(argv, &text) : (g_ptr_array_unref(argv), -1);
    if (one && rc != 0) TP_FAILF("two namespaces: exit %d:\n%s", rc, text);
    if (one && rc == 0) same_run(one, two, 2);
    /* the sums are in rank order whatever the network: the loopback run's
     * parameters bit for bit */
    if (loop && rc == 0) same_bits(loop, two);
    /* the gradients crossed the veth pair: megabytes, not a handshake */
    char *stat = g_strdup_printf("ip netns exec %s cat /sys/class/net/%s/statistics/tx_bytes", na, va);
    char *so = NULL;
    const char *argv2[] = {"/bin/sh", "-c", stat, NULL};
    if (g_spawn_sync(NULL, (char **)argv2, NULL, 0, NULL, NULL, &so, NULL, NULL, NULL)) {
      long long tx = so ? atoll(so) : 0;
      g_test_message("bytes sent over the veth pair: %lld", tx);
      TP_CHECK(tx > 10 * 1000 * 1000);
    }
    g_free(so);
    g_free(stat);
    g_free(text);
    g_free(two);
    g_free(script);
    g_free(agent);
  }
  /* always: end what is left in the namespaces, then remove them (and the pair) */
  char *cleanup = g_strdup_printf(
      "for n in %s %s; do for p in $(ip netns pids $n 2>/dev/null); do kill -9 $p; done; "
      "ip netns del $n 2>/dev/null; done; ip link del %s 2>/dev/null; true", na, nb, va);
  TP_CHECK(sh(cleanup));
  g_free(cleanup);
  g_free(setup);
  g_free(na);
  g_free(nb);
  g_free(va);
  g_free(vb);
}

/* ---- faults ---- */

static int ppid_of(int pid) {
  char *p = g_strdup_printf("/proc/%d/stat", pid), *text = NULL;
  int pp = -1;
  if (g_file_get_contents(p, &text, NULL, NULL)) {
    const char *r = strrchr(text, ')'); /* after the command name */
    if (r) sscanf(r + 1, " %*c %d", &pp);
  }
  g_free(text);
  g_free(p);
  return pp;
}

static bool has_env(int pid, const char *entry) {
  char *p = g_strdup_printf("/proc/%d/environ", pid), *text = NULL;
  gsize len = 0;
  bool found = false;
  if (g_file_get_contents(p, &text, &len, NULL))
    for (gsize i = 0; i < len && !found; i += strlen(text + i) + 1) found = strcmp(text + i, entry) == 0;
  g_free(text);
  g_free(p);
  return found;
}

/* The training process of a rank started under our mpirun: the descendant
 * with that rank whose parent (the supervisor) has it too. */
static int rank_worker(int mpirun, int rank) {
  char *want = g_strdup_printf("OMPI_COMM_WORLD_RANK=%d", rank);
  int found = -1;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d)) && found < 0) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    int up = pid, depth = 0;
    while (up > 1 && up != mpirun && depth < 16) {
      up = ppid_of(up);
      depth++;
    }
    if (up == mpirun && has_env(pid, want) && has_env(ppid_of(pid), want)) found = pid;
  }
  if (d) closedir(d);
  g_free(want);
  return found;
}

static char *file_text(const char *path) {
  char *t = NULL;
  return g_file_get_contents(path, &t, NULL, NULL) ? t : g_strdup("");
}

/* Starts mpirun with output into log; returns its pid. */
static GPid start(GPtrArray *a, const char *log) {
  g_ptr_array_add(a, NULL);
  char *cmd = NULL;
  {
    GString *s = g_string_new("exec");
    for (guint i = 0; a->pdata[i]; i++) {
      char *q = g_shell_quote(a->pdata[i]);
      g_string_append_printf(s, " %s", q);
      g_free(q);
    }
    char *ql = g_shell_quote(log);
    g_string_append_printf(s, " >%s 2>&1", ql);
    g_free(ql);
    cmd = g_string_free(s, FALSE);
  }
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  GPid pid = 0;
  GError *err = NULL;
  if (!g_spawn_async(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid, &err)) {
    TP_FAILF("spawn: %s", err->message);
    g_clear_error(&err);
  }
  g_free(cmd);
  g_ptr_array_unref(a);
  return pid;
}

/* Waits up to limit_s for pid; its exit status, or -1 (then it is killed). */
static int wait_for(GPid pid, double limit_s, double *took_s) {
  gint64 t0 = g_get_monotonic_time();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if ((double)(g_get_monotonic_time() - t0) / 1e6 > limit_s) {
      kill(pid, SIGTERM);
      g_usleep(2 * G_USEC_PER_SEC);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      *took_s = limit_s;
      return -1;
    }
    g_usleep(20000);
  }
  *took_s = (double)(g_get_monotonic_time() - t0) / 1e6;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Waits until the log shows text (or the process ended): TRUE when it did. */
static bool wait_log(const char *log, const char *text, GPid pid, double limit_s) {
  gint64 t0 = g_get_monotonic_time();
  while ((double)(g_get_monotonic_time() - t0) / 1e6 < limit_s) {
    char *t = file_text(log);
    bool seen = strstr(t, text) != NULL;
    g_free(t);
    if (seen) return true;
    if (kill(pid, 0) != 0) return false;
    g_usleep(50000);
  }
  return false;
}

TP_TEST(Distributed, KilledRankEndsTheJobAndResumeFinishes) {
  char *dir = tp_test_tmpdir();
  char *run = g_build_filename(dir, "killed", NULL), *log = g_build_filename(dir, "killed.log", NULL);
  GPid mp = start(train_argv(2, NULL, run, 32, 1, 2), log);
  /* mid-epoch 2: epoch 1's checkpoint is written, epoch 2 is under way */
  bool in_epoch2 = wait_log(log, "Epoch 2/2", mp, 600);
  /* briefly: on an idle machine the whole epoch takes about a second */
  g_usleep(G_USEC_PER_SEC / 10);
  int worker = in_epoch2 ? rank_worker(mp, 1) : -1;
  TP_CHECK(in_epoch2 && worker > 0);
  double took = 0;
  if (worker > 0) kill(worker, SIGKILL);
  int rc = wait_for(mp, worker > 0 ? 30 : 1, &took);
  char *text = file_text(log);
  g_test_message("killed rank 1 (pid %d): mpirun exited %d after %.2f s", worker, rc, took);
  if (worker > 0) {
    TP_CHECK_INT_EQ(rc, 1);
    TP_CHECK(took <= 10.0);
    if (!strstr(text, "rank 1 (pid") || !strstr(text, "killed by signal 9"))
      TP_FAILF("no message naming rank 1 in:\n%s", text);
    char *res = g_build_filename(run, "results.json", NULL);
    TP_CHECK(!g_file_test(res, G_FILE_TEST_EXISTS));
    g_free(res);
    /* one process carries on from epoch 1's checkpoint and finishes */
    char *out = NULL;
    const char *resume[] = {NULL, "train", "--resume", run, "--threads", "1", NULL};
    GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(a, exe());
    for (int i = 1; resume[i]; i++) g_ptr_array_add(a, g_strdup(resume[i]));
    rc = run_argv(a, &out);
    if (rc != 0) TP_FAILF("resume on 1 rank exited %d:\n%s", rc, out);
    TP_CHECK(strstr(out, "Resuming after epoch 1 of 2") != NULL);
    g_free(out);
    JsonParser *jp = NULL;
    JsonObject *o = load_json(run, "results.json", &jp);
    if (o) {
      TP_CHECK_INT_EQ(json_array_get_length(json_object_get_array_member(o, "history")), 2);
      JsonObject *dd = json_object_get_object_member(o, "distributed");
      TP_CHECK(dd && json_object_get_int_member(dd, "world_size") == 1);
    }
    if (jp) g_object_unref(jp);
  }
  g_free(text);
  g_free(run);
  g_free(log);
}

TP_TEST(Distributed, AStoppedRankEndsTheJobAfterTheTimeout) {
  char *dir = tp_test_tmpdir();
  char *run = g_build_filename(dir, "stopped", NULL), *log = g_build_filename(dir, "stopped.log", NULL);
  GPtrArray *a = train_argv(2, NULL, run, 32, 1, 1);
  g_ptr_array_add(a, g_strdup("--dist-timeout"));
  g_ptr_array_add(a, g_strdup("3"));
  GPid mp = start(a, log);
  bool training = wait_log(log, "Epoch 1/1", mp, 600);
  int worker = training ? rank_worker(mp, 1) : -1;
  TP_CHECK(training && worker > 0);
  /* alive but silent: the launcher sees nothing wrong, rank 0 waits */
  if (worker > 0) kill(worker, SIGSTOP);
  double took = 0;
  int rc = wait_for(mp, worker > 0 ? 60 : 1, &took);
  char *text = file_text(log);
  g_test_message("stopped rank 1: mpirun exited %d after %.2f s", rc, took);
  if (worker > 0) {
    TP_CHECK_INT_EQ(rc, 1);
    TP_CHECK(took <= 3 + 10);
    if (!strstr(text, "rank 0 of 2") || !strstr(text, "waited 3 s for the other ranks"))
      TP_FAILF("no timeout message from rank 0 in:\n%s", text);
  }
  if (worker > 0 && kill(worker, 0) == 0) kill(worker, SIGKILL); /* never left behind */
  g_free(text);
  g_free(run);
  g_free(log);
}

TP_TEST(Distributed, UsageErrors) {
  char *dir = tp_test_tmpdir();
  char *run = g_build_filename(dir, "usage", NULL);
  /* two processes without --distributed would both train and write run/ */
  GPtrArray *a = train_argv(2, NULL, run, 32, 1, 1);
  g_free(g_ptr_array_steal_index(a, a->len - 1)); /* drop --distributed */
  char *out = NULL;
  int rc = run_argv(a, &out);
  TP_CHECK_INT_EQ(rc, 2);
  TP_CHECK(strstr(out, "without --distributed") != NULL);
  TP_CHECK(!g_file_test(run, G_FILE_TEST_EXISTS));
  g_free(out);
  rc = run_argv(train_argv(0, NULL, run, 32, 33, 1), &out);
  TP_CHECK_INT_EQ(rc, 2);
  TP_CHECK(strstr(out, "--grad-accum 33") != NULL);
  g_free(out);
  g_free(run);
}
