/* tests/test_cli_options.c — the options every command shares: one
 * validation (NaN/Inf and out-of-range values refused with exit status 2,
 * naming the option), one help style. Nothing here trains: each refused
 * command must stop before any work. */
#include "tp_test.h"
#include "tp_test_cli.h"

static char *vocab(void) {
  return g_build_filename(tp_test_shared_dir(), "data", "bert-base-uncased", "vocab.txt", NULL);
}

/* `train` with a tiny model and one extra option; must exit 2 naming `opt`
 * and create nothing. */
static void expect_train_refuses(const char *opt, const char *value) {
  char *v = vocab(), *tmp = tp_test_tmpdir();
  char *d = g_build_filename(tp_test_shared_dir(), "data", "imdb", NULL);
  char *run = g_build_filename(tmp, "run", NULL);
  char *out = NULL;
  int rc = tp_test_cli(&out, "train", "--model", "bert", "--init", "random", "--layers", "1",
                       "--hidden", "32", "--heads", "2", "--ffn", "64", "--vocab", v, "--data", d,
                       "--subset", "0.01", "--max-len", "32", "--epochs", "1", "--out", run, opt,
                       value, NULL);
  if (rc != 2) TP_FAILF("train %s %s exited %d, expected 2:\n%s", opt, value, rc, out);
  char *named = g_strdup_printf("%s %s", opt, value);
  if (!strstr(out, named)) TP_FAILF("the error does not name \"%s\":\n%s", named, out);
  TP_CHECK(!g_file_test(run, G_FILE_TEST_EXISTS));
  g_free(named);
  g_free(out);
  g_free(run);
  g_free(d);
  g_free(v);
}

TP_TEST(CliOptions, FloatOptionsRefuseNanInfAndOutOfRange) {
  static const char *const bad[][2] = {
      {"--warmup", "nan"},     {"--clip-norm", "nan"}, {"--weight-decay", "nan"},
      {"--warmup", "inf"},     {"--clip-norm", "-inf"}, {"--weight-decay", "2"},
      {"--lr", "nan"},         {"--lr", "1e400"},      {"--subset", "nan"},
      {"--warmup", "-0.5"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) expect_train_refuses(bad[i][0], bad[i][1]);
}

TP_TEST(CliOptions, IntegerOptionsRefuseOutOfRange) {
  static const char *const bad[][2] = {
      {"--device", "-7"}, {"--device", "-1"}, {"--threads", "0"},  {"--batch", "0"},
      {"--max-len", "2"}, {"--layers", "0"},  {"--epochs", "0"},   {"--eval-batch", "-3"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) expect_train_refuses(bad[i][0], bad[i][1]);
  /* not numbers at all: GOption-level errors, also exit 2 */
  expect_train_refuses("--batch", "1.5");
  expect_train_refuses("--lr", "fast");
}

TP_TEST(CliOptions, DeviceMinusSevenIsRefusedByEveryModelCommand) {
  static const char *const cmds[] = {"eval", "predict"};
  for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
    char *out = NULL;
    int rc = i == 0 ? tp_test_cli(&out, cmds[i], "--model", "bert", "--init", "random", "--device",
                                  "-7", "--data", "x.jsonl", NULL)
                    : tp_test_cli(&out, cmds[i], "--model", "bert", "--init", "random", "--device",
                                  "-7", "some text", NULL);
    TP_CHECK_INT_EQ(rc, 2);
    if (!strstr(out, "--device -7")) TP_FAILF("%s: %s", cmds[i], out);
    g_free(out);
  }
}

TP_TEST(CliOptions, TokenizeRefusesLengthsBelowThree) {
  char *v = vocab(), *out = NULL;
  for (int n = 0; n < 3; n++) {
    char num[8];
    g_snprintf(num, sizeof num, "%d", n);
    int rc = tp_test_cli(&out, "tokenize", "--vocab", v, "--max-len", num, "hello world", NULL);
    if (rc != 2) TP_FAILF("--max-len %d exited %d:\n%s", n, rc, out);
    TP_CHECK(strstr(out, "--max-len") != NULL);
    g_free(out);
  }
  /* 3 keeps [CLS], one token, [SEP]; no limit keeps everything */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "tokenize", "--vocab", v, "--max-len", "3", "hello world", NULL), 0);
  TP_CHECK_STR_EQ(out, "101 7592 102\n");
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "tokenize", "--vocab", v, "hello world", NULL), 0);
  TP_CHECK_STR_EQ(out, "101 7592 2088 102\n");
  g_free(out);
  TP_CHECK_INT_EQ(tp_test_cli(&out, "tokenize", "--vocab", v, "--threads", "-1", "x", NULL), 2);
  g_free(out);
  g_free(v);
}

TP_TEST(CliOptions, OneHelpStyleForEveryCommand) {
  static const char *const cmds[] = {"train", "eval", "predict", "tokenize", "bench", "plugins"};
  for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
    char *out = NULL;
    int rc = tp_test_cli(&out, cmds[i], "--help", NULL);
    TP_CHECK_INT_EQ(rc, 0);
    char *usage = g_strdup_printf("Usage:\n  tensorplug %s [OPTION...]", cmds[i]);
    if (!g_str_has_prefix(out, usage)) TP_FAILF("%s --help:\n%s", cmds[i], out);
    TP_CHECK(strstr(out, "\nOptions:\n  -h, --help ") != NULL);
    g_free(usage);
    g_free(out);
  }
  /* the model commands show every group, each option with its default */
  char *out = NULL;
  TP_CHECK_INT_EQ(tp_test_cli(&out, "train", "--help", NULL), 0);
  TP_CHECK(strstr(out, "\nModel options:\n") && strstr(out, "\nDevice options:\n"));
  TP_CHECK(strstr(out, "--max-len=N") && strstr(out, "[the model's") && strstr(out, "at most 512]"));
  TP_CHECK(strstr(out, "--device=N") && strstr(out, "[the first suitable]"));
  g_free(out);
  /* unknown options: exit 2 with a hint */
  TP_CHECK_INT_EQ(tp_test_cli(&out, "eval", "--no-such-flag", NULL), 2);
  TP_CHECK(strstr(out, "--help") != NULL);
  g_free(out);
}

TP_TEST(CliOptions, ValuesReadFromARunFolderPassTheSameValidation) {
  char *tmp = tp_test_tmpdir();
  char *res = g_build_filename(tmp, "results.json", NULL);
  TP_ASSERT(g_file_set_contents(res, "{\"config\": {\"data\": [\"x.jsonl\"], \"max_len\": 1}, "
                                     "\"test\": {\"accuracy\": 0.5}}", -1, NULL));
  char *out = NULL;
  TP_CHECK_INT_EQ(tp_test_cli(&out, "eval", "--run", tmp, NULL), 2);
  TP_CHECK(strstr(out, "--max-len 1") != NULL);
  g_free(out);
  g_free(res);
}
