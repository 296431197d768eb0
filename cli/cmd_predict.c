/* cli/cmd_predict.c — `tensorplug predict`: label texts with a model. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tensorplug/error.h"

static char *read_stdin_lines(GPtrArray *texts, GError **err) {
  GIOChannel *ch = g_io_channel_unix_new(0);
  g_io_channel_set_encoding(ch, NULL, NULL); /* bytes; the tokenizer handles bad UTF-8 */
  char *line = NULL;
  gsize len = 0;
  GIOStatus st;
  while ((st = g_io_channel_read_line(ch, &line, &len, NULL, err)) == G_IO_STATUS_NORMAL) {
    g_strchomp(line);
    g_ptr_array_add(texts, line);
  }
  g_io_channel_unref(ch);
  return st == G_IO_STATUS_ERROR ? NULL : (char *)"";
}

static void json_string(GString *out, const char *s) {
  JsonNode *n = json_node_new(JSON_NODE_VALUE);
  json_node_set_string(n, s);
  char *t = json_to_string(n, FALSE);
  g_string_append(out, t);
  g_free(t);
  json_node_unref(n);
}

static int run(const tp_cli_opts *o, char **argv, int argc) {
  const tp_cli_model_opts *mo = &o->mo;
  const tp_cli_run_opts *ro = &o->ro;
  int max_len = o->max_len, batch = o->eval_batch;
  bool json = o->json;
  GError *err = NULL;
  GPtrArray *texts = g_ptr_array_new_with_free_func(g_free);
  for (int i = 1; i < argc; i++) g_ptr_array_add(texts, g_strdup(argv[i]));
  if (argc <= 1 && !read_stdin_lines(texts, &err)) return tp_cli_report(err);
  tp_cli_session s;
  bool ok = tp_cli_session_open(&s, mo, ro, 42, true, &err) &&
            tp_cli_check_max_len(&s, &max_len, &err);
  if (ok) tp_cli_warn_untrained_head(&s);
  guint n = texts->len;
  int c = ok ? s.model->cfg.num_labels : 2;
  float *probs = g_new0(float, (gsize)MAX(n, 1) * c), *logits = g_new0(float, (gsize)MAX(n, 1) * c);
  tp_token_seqs *seqs = NULL;
  if (ok && n > 0) {
    seqs = tp_tokenizer_encode_batch(s.tok, (const char *const *)texts->pdata, n, max_len, ro->threads);
    ok = tp_cli_check_step_memory(&s, MIN((guint)batch, n), tp_cli_longest(seqs), false,
                                  "--eval-batch", &err);
    int *labels = g_new0(int, n); /* unknown: only probabilities are used */
    guint *idx = g_new(guint, n);
    for (guint i = 0; i < n; i++) idx[i] = i;
    tp_labelled data = {.seqs = seqs, .labels = labels, .pad_id = tp_tokenizer_pad_id(s.tok)};
    tp_eval_result r;
    ok = ok && tp_evaluate(s.model, s.ctx, &data, idx, n, batch, probs, logits, NULL, NULL,
                           "predict", &r, &err);
    g_free(labels);
    g_free(idx);
  }
  for (guint i = 0; ok && i < n; i++) {
    int best = 0;
    for (int j = 1; j < c; j++)
      if (probs[i * c + j] > probs[i * c + best]) best = j;
    const char *name = s.model->cfg.label_names[best];
    if (json) {
      GString *o = g_string_new("{\"text\": ");
      json_string(o, g_ptr_array_index(texts, i));
      g_string_append_printf(o, ", \"label\": %d, \"name\": ", best);
      json_string(o, name);
      g_string_append(o, ", \"probs\": [");
      for (int j = 0; j < c; j++) g_string_append_printf(o, "%s%.6g", j ? ", " : "", probs[i * c + j]);
      g_string_append(o, "], \"logits\": [");
      for (int j = 0; j < c; j++) g_string_append_printf(o, "%s%.6g", j ? ", " : "", logits[i * c + j]);
      g_string_append(o, "]}");
      printf("%s\n", o->str);
      g_string_free(o, TRUE);
    } else {
      const char *t = g_ptr_array_index(texts, i);
      printf("%d\t%s\t%.4f\t%.70s%s\n", best, name, probs[i * c + best], t,
             strlen(t) > 70 ? "..." : "");
    }
  }
  int rc = ok ? TP_EXIT_OK : tp_cli_report(err);
  g_free(probs);
  g_free(logits);
  if (seqs) tp_token_seqs_free(seqs);
  tp_cli_session_close(&s);
  g_ptr_array_unref(texts);
  return rc;
}

int tp_cmd_predict(int argc, char **argv) {
  tp_cli_opts o;
  tp_cli_opts_init(&o);
  tp_cli_optset *set = tp_cli_optset_new("[TEXT...]",
      "Prints, one line per text, the predicted label index, its name (from the model's\n"
      "config) and its probability. Texts come from the arguments, else one per stdin line.",
      NULL);
  tp_cli_optset_add_text(set, &o);
  tp_cli_optset_add_json(set, &o, "One JSON object per text: text, label, name, probs, logits");
  tp_cli_optset_add_model(set, &o);
  tp_cli_optset_add_device(set, &o);
  int rc = tp_cli_optset_parse(set, &argc, &argv);
  if (rc < 0) rc = run(&o, argv, argc);
  tp_cli_optset_free(set);
  tp_cli_opts_clear(&o);
  return rc;
}
