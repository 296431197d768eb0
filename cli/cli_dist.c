/* cli/cli_dist.c — what `tensorplug train --distributed` adds around the
 * training loop: the rank supervisor, and moving rank 0's tokens, weights
 * and training state to every rank (so only rank 0 needs the run folder). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "tensorplug/error.h"
#include "tensorplug/registry.h"

const char *tp_cli_launcher_rank(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                     "SLURM_PROCID"};
  for (size_t i = 0; i < G_N_ELEMENTS(vars); i++) {
    const char *v = g_getenv(vars[i]);
    if (v && *v) return v;
  }
  return "?";
}

/* ---- the supervisor ----
 * A rank killed outright (SIGKILL, the out-of-memory killer, a crash) cannot
 * say anything, and mpirun then ends the job with 128 + the signal number.
 * So the process the launcher starts forks: the child is the rank (it alone
 * initialises MPI), the parent only waits for it, forwards signals, and
 * turns a death by signal into a message naming the rank and exit status 1.
 * The launcher sees that status and ends the other ranks at once. */

static volatile sig_atomic_t g_child;
static volatile sig_atomic_t g_told; /* the launcher or user signalled us */

static void forward(int sig) {
  g_told = sig;
  if (g_child > 0) kill((pid_t)g_child, sig);
}

int tp_cli_supervise(void) {
  if (g_getenv("TENSORPLUG_NO_SUPERVISOR")) return -1;
  pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1; /* run unsupervised: the launcher still ends the job */
  if (pid == 0) {
    /* the rank dies with its supervisor (mpirun kills the process it started) */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    return -1;
  }
  g_child = pid;
  struct sigaction sa = {0};
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) sigaction(sigs[i], &sa, NULL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "tensorplug: error: rank %s: waiting for the training process failed: "
              "%s\n", tp_cli_launcher_rank(), g_strerror(errno));
      return TP_EXIT_FAILED;
    }
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  int sig = WTERMSIG(st);
  if (g_told) return 128 + sig; /* ended on request: the launcher reports it */
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  fprintf(stderr, "tensorplug: error: rank %s (pid %d on %s) was killed by signal %d (%s)%s; "
          "ending the job. The last completed epoch is in RUN/checkpoint: continue with "
          "`tensorplug train --resume RUN` (any number of ranks)\n", tp_cli_launcher_rank(),
          (int)pid, host, sig, strsignal(sig),
          sig == SIGKILL ? " — the kernel's out-of-memory killer does this too (see dmesg)" : "");
  return TP_EXIT_FAILED;
}

/* ---- rank 0's data to every rank ---- */

bool tp_cli_bcast_seqs(tp_collective *c, tp_token_seqs **seqs, GError **err) {
  int64_t head[2] = {0, 0};
  if (tp_collective_rank(c) == 0) {
    head[0] = (*seqs)->n;
    head[1] = (*seqs)->offsets[(*seqs)->n];
  }
  if (!tp_collective_bcast(c, head, sizeof head, 0, err)) return false;
  if (tp_collective_rank(c) != 0) {
    tp_token_seqs *s = g_new0(tp_token_seqs, 1);
    s->n = head[0];
    s->offsets = g_new(int64_t, (size_t)head[0] + 1);
    s->ids = g_new(int32_t, (size_t)head[1] + 1);
    *seqs = s;
  }
  return tp_collective_bcast(c, (*seqs)->offsets, ((size_t)head[0] + 1) * sizeof(int64_t), 0,
                             err) &&
         tp_collective_bcast(c, (*seqs)->ids, (size_t)head[1] * sizeof(int32_t), 0, err);
}

bool tp_cli_bcast_params(tp_collective *c, tp_model *m, tp_ctx *ctx, bool with_optimizer,
                         GError **err) {
  int64_t nf = tp_params_flat_floats(m->params);
  float *h = g_new(float, (size_t)nf);
  static const int which[3] = {0, 2, 3};
  bool ok = true;
  for (int i = 0; ok && i < (with_optimizer ? 3 : 1); i++) {
    GError *local = NULL;
    bool mine = tp_collective_rank(c) != 0 || tp_params_read_flat(m->params, ctx, which[i], h, &local);
    ok = tp_collective_agree(c, mine, local, err) &&
         tp_collective_bcast(c, h, (size_t)nf * sizeof(float), 0, err) &&
         (tp_collective_rank(c) == 0 || tp_params_write_flat(m->params, ctx, which[i], h, err));
  }
  g_free(h);
  return ok;
}

bool tp_cli_bcast_state(tp_collective *c, tp_train_state *s, GError **err) {
  int64_t head[6] = {s->epochs_done, s->global_step, s->best_epoch, s->bad_epochs,
                     s->stopped_early, s->history ? s->history->len : 0};
  double best = s->best_val_loss;
  if (!tp_collective_bcast(c, head, sizeof head, 0, err) ||
      !tp_collective_bcast(c, &best, sizeof best, 0, err))
    return false;
  if (tp_collective_rank(c) != 0) {
    s->epochs_done = (int)head[0];
    s->global_step = head[1];
    s->best_epoch = (int)head[2];
    s->bad_epochs = (int)head[3];
    s->stopped_early = head[4] != 0;
    s->best_val_loss = best;
    g_array_set_size(s->history, (guint)head[5]);
  }
  /* the same build on every rank: the stats travel as bytes */
  return head[5] == 0 ||
         tp_collective_bcast(c, s->history->data, (size_t)head[5] * sizeof(tp_epoch_stats), 0,
                             err);
}

/* ---- one device per rank ---- */

static int local_rank(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                     "SLURM_LOCALID"};
  for (size_t i = 0; i < G_N_ELEMENTS(vars); i++) {
    const char *v = g_getenv(vars[i]);
    if (v && *v) return atoi(v);
  }
  return -1;
}

/* Hardware devices of a backend (0 when it has none or is not loaded). */
static int device_count(const char *name) {
  const tp_backend_iface *iface = tp_registry_find_backend(tp_registry_get_default(), name, NULL);
  if (!iface) return 0;
  tp_device_info infos[16];
  char *why = NULL;
  int n = tp_backend_probe(iface, infos, 16, &why);
  g_free(why);
  int hw = 0;
  for (int i = 0; i < n; i++) hw += tp_device_is_auto_candidate(&infos[i]);
  return hw == n ? n : 0; /* a mix with software devices: leave the choice to the user */
}

void tp_cli_rank_device(tp_cli_run_opts *ro) {
  int local = local_rank();
  if (ro->device >= 0 || local < 0) return;
  const char *want = ro->backend ? ro->backend : "auto";
  if (strcmp(want, "cpu") == 0) return;
  static const char *const order[] = {"cuda", "vulkan"};
  for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
    if (strcmp(want, "auto") != 0 && strcmp(want, order[i]) != 0) continue;
    int n = device_count(order[i]);
    if (n <= 0) continue;
    g_free(ro->backend);
    ro->backend = g_strdup(order[i]);
    ro->device = local % n;
    return;
  }
}
