/* tests/test_safetensors.c — safetensors round trips, files written by
 * PyTorch (bert_reference.py), and one test per kind of corruption, each
 * checking that its error message says what is wrong. */
#include "tp_test.h"

#include <stdint.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "tensorplug/error.h"
#include "tensorplug/safetensors.h"

#define PYTHON "/usr/bin/python3"

/* ---- helpers ----------------------------------------------------------- */

static bool run_argv(char **argv, char **out, GError **err) {
  int status = 0;
  char *err_text = NULL;
  bool ok = g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, &err_text,
                         &status, err) &&
            g_spawn_check_wait_status(status, err);
  if (!ok && err && *err && err_text && *err_text) g_prefix_error(err, "%s\n", err_text);
  g_free(err_text);
  return ok;
}

static bool have_torch(void) {
  char *argv[] = {PYTHON, "-c", "import torch", NULL};
  GError *err = NULL;
  bool ok = run_argv(argv, NULL, &err);
  g_clear_error(&err);
  return ok;
}

/* Writes a tiny BERT with the reference script into a fresh folder. */
static char *make_reference_model(GError **err) {
  char *dir = tp_test_tmpdir();
  char *out = g_build_filename(dir, "tiny", NULL);
  char *script = g_build_filename(tp_test_shared_dir(), "reference", "bert_reference.py", NULL);
  char *argv[] = {PYTHON, script, "--arch", "bert", "--layers", "1", "--hidden", "16",
                  "--heads", "2", "--ffn", "32", "--vocab-size", "50", "--max-pos", "16",
                  "--out", out, NULL};
  bool ok = run_argv(argv, NULL, err);
  g_free(script);
  g_free(dir);
  if (!ok) g_clear_pointer(&out, g_free);
  return out;
}

/* The fixture for the corruption tests: a (2x3 F32, 24 bytes at [0,24]),
 * b (4 BF16, [24,32]), c (3 I32, [32,44]). */
static char *write_small(const char *dir, const char *name) {
  static const float a[6] = {1, 2, 3, 4, 5, 6};
  static const uint16_t b[4] = {0x3f80, 0x4000, 0x4040, 0x4080}; /* 1 2 3 4 in bf16 */
  static const int32_t c[3] = {-1, 0, 7};
  tp_st_write_item items[] = {
      {.name = "a", .dtype = TP_F32, .ndim = 2, .shape = {2, 3}, .data = a},
      {.name = "b", .dtype = TP_BF16, .ndim = 1, .shape = {4}, .data = b},
      {.name = "c", .dtype = TP_I32, .ndim = 1, .shape = {3}, .data = c},
  };
  char *path = g_build_filename(dir, name, NULL);
  GError *err = NULL;
  if (!tp_safetensors_write(path, items, G_N_ELEMENTS(items), NULL, &err)) {
    TP_FAILF("write_small: %s", err->message);
    g_clear_error(&err);
  }
  return path;
}

static void put_u64_le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Copies src to dst replacing the first `from` in the header by `to`, and
 * rewrites the header length to match. Fails the test if `from` is absent,
 * so that a change in the writer's formatting cannot make a test vacuous. */
static char *corrupt_header(const char *src, const char *dst_name, const char *from,
                            const char *to) {
  char *buf = NULL;
  gsize len = 0;
  if (!g_file_get_contents(src, &buf, &len, NULL) || len < 8) return NULL;
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)buf[i] << (8 * i);
  char *header = g_strndup(buf + 8, (gsize)n);
  char *hit = strstr(header, from);
  if (!hit) {
    TP_FAILF("corrupt_header: \"%s\" not found in header %s", from, header);
    g_free(header);
    g_free(buf);
    return NULL;
  }
  GString *h = g_string_new_len(header, hit - header);
  g_string_append(h, to);
  g_string_append(h, hit + strlen(from));
  GByteArray *out = g_byte_array_new();
  uint8_t le[8];
  put_u64_le(le, h->len);
  g_byte_array_append(out, le, 8);
  g_byte_array_append(out, (const guint8 *)h->str, h->len);
  g_byte_array_append(out, (const guint8 *)buf + 8 + n, len - 8 - n);
  char *dir = g_path_get_dirname(src);
  char *dst = g_build_filename(dir, dst_name, NULL);
  g_file_set_contents(dst, (const char *)out->data, out->len, NULL);
  g_free(dir);
  g_byte_array_unref(out);
  g_string_free(h, TRUE);
  g_free(header);
  g_free(buf);
  return dst;
}

/* Opens path, expecting failure with `code` and `part` in the message, and
 * the file's path too (every error must name the file). */
static void expect_open_error(const char *path, int code, const char *part) {
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open(path, &err);
  TP_CHECK(st == NULL);
  tp_safetensors_close(st);
  if (err && !strstr(err->message, path)) TP_FAILF("error does not name the file: %s", err->message);
  TP_CHECK_ERROR(err, code, part);
}

/* ---- round trips ------------------------------------------------------- */

TP_TEST(Safetensors, RoundTripDtypesShapesMetadata) {
  char *dir = tp_test_tmpdir();
  char *path = g_build_filename(dir, "rt.safetensors", NULL);
  float f32[6] = {1.5f, -2.25f, 0.0f, 3.0e-8f, 1e30f, -0.0f};
  uint16_t bf16[5], f16[4];
  float bf_src[5] = {1.0f, -2.0f, 0.5f, 3.140625f, -1024.0f};
  float f16_src[4] = {0.5f, -65504.0f, 1.0f / 1024, 2.0f};
  for (int i = 0; i < 5; i++) bf16[i] = tp_f32_to_bf16(bf_src[i]);
  for (int i = 0; i < 4; i++) f16[i] = tp_f32_to_f16(f16_src[i]);
  int32_t i32[6] = {-7, 0, 1, 2147483647, -2147483647 - 1, 42};
  float scalar = 2.5f;
  tp_st_write_item items[] = {
      {.name = "w.f32", .dtype = TP_F32, .ndim = 2, .shape = {3, 2}, .data = f32},
      {.name = "w.bf16", .dtype = TP_BF16, .ndim = 1, .shape = {5}, .data = bf16},
      {.name = "w.f16", .dtype = TP_F16, .ndim = 3, .shape = {1, 2, 2}, .data = f16},
      {.name = "ids", .dtype = TP_I32, .ndim = 2, .shape = {2, 3}, .data = i32},
      {.name = "scalar", .dtype = TP_F32, .ndim = 0, .data = &scalar},
      {.name = "empty", .dtype = TP_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
      {.name = "name with \"quotes\" and é", .dtype = TP_F32, .ndim = 1, .shape = {1}, .data = &scalar},
  };
  GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(meta, "format", "pt");
  g_hash_table_insert(meta, "note", "a \"quoted\"\nvalue");
  GError *err = NULL;
  TP_CHECK(tp_safetensors_write(path, items, G_N_ELEMENTS(items), meta, &err));
  g_hash_table_unref(meta);
  TP_ASSERT_NO_ERROR(err);

  tp_safetensors *st = tp_safetensors_open(path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_ASSERT(st != NULL);
  TP_CHECK_STR_EQ(tp_safetensors_path(st), path);
  TP_CHECK_INT_EQ(tp_safetensors_count(st), G_N_ELEMENTS(items));
  TP_CHECK_STR_EQ(tp_safetensors_metadata(st, "format"), "pt");
  TP_CHECK_STR_EQ(tp_safetensors_metadata(st, "note"), "a \"quoted\"\nvalue");
  TP_CHECK(tp_safetensors_metadata(st, "absent") == NULL);
  for (guint i = 0; i < G_N_ELEMENTS(items); i++) {
    const tp_st_tensor *t = tp_safetensors_at(st, i);
    TP_ASSERT(t != NULL);
    TP_CHECK_STR_EQ(t->name, items[i].name); /* file order is preserved */
    TP_CHECK(tp_safetensors_find(st, items[i].name) == t);
    TP_CHECK_INT_EQ(t->dtype, items[i].dtype);
    TP_CHECK_INT_EQ(t->ndim, items[i].ndim);
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      TP_CHECK_INT_EQ(t->shape[d], items[i].shape[d]);
      numel *= items[i].shape[d];
    }
    TP_CHECK_INT_EQ(t->numel, numel);
    TP_CHECK_INT_EQ(t->nbytes, (size_t)numel * tp_dtype_size(items[i].dtype));
    if (t->nbytes) TP_CHECK(memcmp(t->data, items[i].data, t->nbytes) == 0);
  }
  TP_CHECK(tp_safetensors_at(st, G_N_ELEMENTS(items)) == NULL);
  TP_CHECK(tp_safetensors_find(st, "nope") == NULL);
  TP_CHECK_STR_EQ(tp_safetensors_find(st, "w.bf16")->dtype_name, "BF16");
  TP_CHECK_STR_EQ(tp_safetensors_find(st, "ids")->dtype_name, "I32");
  TP_CHECK_INT_EQ(tp_safetensors_find(st, "scalar")->ndim, 0);
  TP_CHECK_INT_EQ(tp_safetensors_find(st, "scalar")->numel, 1);
  TP_CHECK_INT_EQ(tp_safetensors_find(st, "empty")->numel, 0);

  float got[6];
  TP_CHECK(tp_st_tensor_to_f32(tp_safetensors_find(st, "w.f32"), got, &err));
  TP_ASSERT_NO_ERROR(err);
  for (int i = 0; i < 6; i++) TP_CHECK(memcmp(&got[i], &f32[i], 4) == 0);
  TP_CHECK(tp_st_tensor_to_f32(tp_safetensors_find(st, "w.bf16"), got, &err));
  TP_ASSERT_NO_ERROR(err);
  for (int i = 0; i < 5; i++) TP_CHECK_NEAR(got[i], bf_src[i], 0);
  TP_CHECK(tp_st_tensor_to_f32(tp_safetensors_find(st, "w.f16"), got, &err));
  TP_ASSERT_NO_ERROR(err);
  for (int i = 0; i < 4; i++) TP_CHECK_NEAR(got[i], f16_src[i], 0);
  TP_CHECK(tp_st_tensor_to_f32(tp_safetensors_find(st, "empty"), got, &err));
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK(!tp_st_tensor_to_f32(tp_safetensors_find(st, "ids"), got, &err));
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "cannot convert dtype I32");
  tp_safetensors_close(st);

  /* Header padded to a multiple of 8 so the data section is 8-aligned. */
  char *buf = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(path, &buf, &len, NULL));
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)buf[i] << (8 * i);
  TP_CHECK_INT_EQ(n % 8, 0);
  TP_CHECK(buf[8] == '{');
  TP_CHECK_INT_EQ(len, 8 + n + 24 + 10 + 8 + 24 + 4 + 0 + 4);
  g_free(buf);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, DefaultMetadataAndEmptyFile) {
  char *dir = tp_test_tmpdir();
  char *path = g_build_filename(dir, "empty.safetensors", NULL);
  GError *err = NULL;
  TP_CHECK(tp_safetensors_write(path, NULL, 0, NULL, &err));
  TP_ASSERT_NO_ERROR(err);
  tp_safetensors *st = tp_safetensors_open(path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_safetensors_count(st), 0);
  TP_CHECK_STR_EQ(tp_safetensors_metadata(st, "format"), "pt");
  tp_safetensors_close(st);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, WriteIsAtomicAndReplaces) {
  char *dir = tp_test_tmpdir();
  char *path = write_small(dir, "m.safetensors");
  float v = 9.0f;
  tp_st_write_item item = {.name = "only", .dtype = TP_F32, .ndim = 1, .shape = {1}, .data = &v};
  GError *err = NULL;
  TP_CHECK(tp_safetensors_write(path, &item, 1, NULL, &err));
  TP_ASSERT_NO_ERROR(err);
  tp_safetensors *st = tp_safetensors_open(path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_safetensors_count(st), 1);
  tp_safetensors_close(st);
  /* No temp file left behind. */
  GDir *d = g_dir_open(dir, 0, NULL);
  TP_ASSERT(d != NULL);
  int entries = 0;
  for (const char *e; (e = g_dir_read_name(d));) entries++;
  g_dir_close(d);
  TP_CHECK_INT_EQ(entries, 1);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, WriteRejectsBadItemsAndPaths) {
  char *dir = tp_test_tmpdir();
  float v[2] = {1, 2};
  tp_st_write_item dup[] = {
      {.name = "x", .dtype = TP_F32, .ndim = 1, .shape = {1}, .data = v},
      {.name = "x", .dtype = TP_F32, .ndim = 1, .shape = {1}, .data = v + 1},
  };
  char *path = g_build_filename(dir, "bad.safetensors", NULL);
  GError *err = NULL;
  TP_CHECK(!tp_safetensors_write(path, dup, 2, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "appears twice");
  tp_st_write_item neg = {.name = "n", .dtype = TP_F32, .ndim = 1, .shape = {-1}, .data = v};
  TP_CHECK(!tp_safetensors_write(path, &neg, 1, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "negative");
  tp_st_write_item meta = {.name = "__metadata__", .dtype = TP_F32, .ndim = 0, .data = v};
  TP_CHECK(!tp_safetensors_write(path, &meta, 1, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_INVALID_ARGUMENT, "__metadata__");
  TP_CHECK(!g_file_test(path, G_FILE_TEST_EXISTS));

  char *missing = g_build_filename(dir, "no", "such", "dir.safetensors", NULL);
  tp_st_write_item ok = {.name = "x", .dtype = TP_F32, .ndim = 0, .data = v};
  TP_CHECK(!tp_safetensors_write(missing, &ok, 1, NULL, &err));
  TP_CHECK_ERROR(err, TP_ERROR_IO, "cannot write");
  g_free(missing);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, OpenBytesInMemory) {
  char *dir = tp_test_tmpdir();
  char *path = write_small(dir, "m.safetensors");
  char *buf = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(path, &buf, &len, NULL));
  GBytes *bytes = g_bytes_new_take(buf, len);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open_bytes(bytes, "mem", &err);
  g_bytes_unref(bytes); /* the reader keeps its own reference */
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_INT_EQ(tp_safetensors_count(st), 3);
  const tp_st_tensor *c = tp_safetensors_find(st, "c");
  TP_ASSERT(c != NULL);
  int32_t cv[3];
  memcpy(cv, c->data, sizeof cv);
  TP_CHECK_INT_EQ(cv[0], -1);
  TP_CHECK_INT_EQ(cv[2], 7);
  tp_safetensors_close(st);
  g_free(path);
  g_free(dir);
}

/* ---- files written by PyTorch ------------------------------------------ */

TP_TEST(Safetensors, OpensPyTorchReferenceFiles) {
  if (!have_torch()) TP_SKIP(PYTHON " cannot import torch (apt-get install python3-torch)");
  GError *err = NULL;
  char *dir = make_reference_model(&err);
  TP_ASSERT_NO_ERROR(err);
  char *model_path = g_build_filename(dir, "model.safetensors", NULL);
  tp_safetensors *model = tp_safetensors_open(model_path, &err);
  TP_ASSERT_NO_ERROR(err);
  struct {
    const char *name;
    int ndim;
    int64_t d0, d1;
  } want[] = {
      {"bert.embeddings.word_embeddings.weight", 2, 50, 16},
      {"bert.embeddings.position_embeddings.weight", 2, 16, 16},
      {"bert.embeddings.token_type_embeddings.weight", 2, 2, 16},
      {"bert.embeddings.LayerNorm.weight", 1, 16, 0},
      {"bert.encoder.layer.0.attention.self.query.weight", 2, 16, 16},
      {"bert.encoder.layer.0.intermediate.dense.weight", 2, 32, 16},
      {"bert.encoder.layer.0.output.dense.weight", 2, 16, 32},
      {"bert.pooler.dense.weight", 2, 16, 16},
      {"classifier.weight", 2, 2, 16},
      {"classifier.bias", 1, 2, 0},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
    const tp_st_tensor *t = tp_safetensors_find(model, want[i].name);
    if (!t) {
      TP_FAILF("model.safetensors lacks %s", want[i].name);
      continue;
    }
    TP_CHECK_STR_EQ(t->dtype_name, "F32");
    TP_CHECK_INT_EQ(t->dtype, TP_F32);
    TP_CHECK_INT_EQ(t->ndim, want[i].ndim);
    TP_CHECK_INT_EQ(t->shape[0], want[i].d0);
    if (want[i].ndim == 2) TP_CHECK_INT_EQ(t->shape[1], want[i].d1);
  }
  /* 5 embedding + 16 per layer + 2 pooler + 2 classifier tensors. */
  TP_CHECK_INT_EQ(tp_safetensors_count(model), 5 + 16 + 2 + 2);
  tp_safetensors_close(model);

  char *golden_path = g_build_filename(dir, "golden.safetensors", NULL);
  tp_safetensors *golden = tp_safetensors_open(golden_path, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_STR_EQ(tp_safetensors_metadata(golden, "format"), "pt");
  const tp_st_tensor *ids = tp_safetensors_find(golden, "input_ids");
  TP_ASSERT(ids != NULL);
  TP_CHECK_STR_EQ(ids->dtype_name, "I32");
  TP_CHECK_INT_EQ(ids->ndim, 2);
  const tp_st_tensor *logits = tp_safetensors_find(golden, "logits");
  TP_ASSERT(logits != NULL);
  TP_CHECK_INT_EQ(logits->ndim, 2);
  TP_CHECK_INT_EQ(logits->shape[0], ids->shape[0]);
  TP_CHECK_INT_EQ(logits->shape[1], 2);
  TP_CHECK(tp_safetensors_find(golden, "grad.classifier.weight") != NULL);

  /* The values must be those python printed into golden.json. */
  float got[64];
  TP_ASSERT(logits->numel <= 64);
  TP_CHECK(tp_st_tensor_to_f32(logits, got, &err));
  TP_ASSERT_NO_ERROR(err);
  char *json_path = g_build_filename(dir, "golden.json", NULL);
  JsonParser *parser = json_parser_new();
  TP_CHECK(json_parser_load_from_file(parser, json_path, &err));
  TP_ASSERT_NO_ERROR(err);
  JsonArray *rows = json_object_get_array_member(json_node_get_object(json_parser_get_root(parser)),
                                                 "logits");
  TP_CHECK_INT_EQ(json_array_get_length(rows), logits->shape[0]);
  for (guint r = 0; r < json_array_get_length(rows) && r < logits->shape[0]; r++) {
    JsonArray *row = json_array_get_array_element(rows, r);
    for (guint c = 0; c < 2; c++)
      TP_CHECK_NEAR(got[r * 2 + c], json_array_get_double_element(row, c), 1e-7);
  }
  g_object_unref(parser);
  g_free(json_path);
  tp_safetensors_close(golden);
  g_free(golden_path);
  g_free(model_path);
  g_free(dir);
}

/* The other direction: python (no safetensors package needed) parses a file
 * written here and prints what it finds. */
TP_TEST(Safetensors, PythonReadsOurFiles) {
  if (!have_torch()) TP_SKIP(PYTHON " cannot import torch (apt-get install python3-torch)");
  char *dir = tp_test_tmpdir();
  char *path = write_small(dir, "m.safetensors");
  const char *code =
      "import json, struct, sys, torch\n"
      "b = open(sys.argv[1], 'rb').read()\n"
      "n = struct.unpack('<Q', b[:8])[0]\n"
      "h = json.loads(b[8:8 + n]); base = 8 + n\n"
      "dt = {'F32': torch.float32, 'BF16': torch.bfloat16, 'I32': torch.int32}\n"
      "out = []\n"
      "for k in ('a', 'b', 'c'):\n"
      "    s, e = h[k]['data_offsets']\n"
      "    t = torch.frombuffer(bytearray(b[base + s:base + e]), dtype=dt[h[k]['dtype']])\n"
      "    out.append('%s:%s:%g' % (k, 'x'.join(map(str, h[k]['shape'])), t.double().sum()))\n"
      "print(' '.join(out), h['__metadata__']['format'])\n";
  char *argv[] = {PYTHON, "-c", (char *)code, path, NULL};
  char *out = NULL;
  GError *err = NULL;
  run_argv(argv, &out, &err);
  TP_ASSERT_NO_ERROR(err);
  TP_CHECK_STR_EQ(g_strstrip(out), "a:2x3:21 b:4:10 c:3:6 pt");
  g_free(out);
  g_free(path);
  g_free(dir);
}

/* ---- corruption: one test per failure, each with its message ----------- */

TP_TEST(Safetensors, CorruptTruncatedData) {
  char *dir = tp_test_tmpdir();
  char *path = write_small(dir, "m.safetensors");
  char *buf = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(path, &buf, &len, NULL));
  TP_ASSERT(g_file_set_contents(path, buf, len - 6, NULL)); /* cut into "c" */
  expect_open_error(path, TP_ERROR_FORMAT,
                    "tensor \"c\": data_offsets end 44 is outside the data section: expected at "
                    "most 38 bytes");
  GError *err = NULL;
  TP_CHECK(tp_safetensors_open(path, &err) == NULL);
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, "truncated or corrupt: download it again");
  g_free(buf);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptHeaderLengthLargerThanFile) {
  char *dir = tp_test_tmpdir();
  char *path = write_small(dir, "m.safetensors");
  char *buf = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(path, &buf, &len, NULL));
  put_u64_le((uint8_t *)buf, len);
  TP_ASSERT(g_file_set_contents(path, buf, len, NULL));
  char *msg = g_strdup_printf("header length %zu is larger than the file: expected at most %zu",
                              (size_t)len, (size_t)len - 8);
  expect_open_error(path, TP_ERROR_FORMAT, msg);
  /* A wild length (random bytes) must not overflow the comparison. */
  put_u64_le((uint8_t *)buf, UINT64_MAX);
  TP_ASSERT(g_file_set_contents(path, buf, len, NULL));
  expect_open_error(path, TP_ERROR_FORMAT, "is larger than the file");
  g_free(msg);
  g_free(buf);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptOverlappingOffsets) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  char *path = corrupt_header(src, "overlap.safetensors", "[24,32]", "[16,24]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT,
                    "tensors \"a\" [0, 24] and \"b\" [16, 24] overlap");
  g_free(path);
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptUnknownDtype) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  char *path = corrupt_header(src, "dtype.safetensors", "\"BF16\"", "\"Q7\"");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT, "tensor \"b\": unknown dtype \"Q7\"; expected one of");
  g_free(path);
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptShapeDoesNotMatchByteRange) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  char *path = corrupt_header(src, "shape.safetensors", "[2,3]", "[3,3]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT,
                    "tensor \"a\": shape [3, 3] x F32 (4 bytes each) needs 36 bytes, but "
                    "data_offsets [0, 24] hold 24");
  g_free(path);
  /* A shape whose element count overflows 64 bits. */
  path = corrupt_header(src, "huge.safetensors", "[2,3]",
                        "[4294967296,4294967296,4294967296]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT, "tensor \"a\": the shape's element count overflows");
  g_free(path);
  path = corrupt_header(src, "negative.safetensors", "[2,3]", "[-2,-3]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT, "tensor \"a\": shape[0] must be a non-negative integer");
  g_free(path);
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptOffsetsOutsideDataSection) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  char *path = corrupt_header(src, "outside.safetensors", "[32,44]", "[40,52]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT,
                    "tensor \"c\": data_offsets end 52 is outside the data section: expected at "
                    "most 44 bytes, found 52");
  g_free(path);
  path = corrupt_header(src, "reversed.safetensors", "[32,44]", "[44,32]");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT, "data_offsets [44, 32]: expected begin <= end");
  g_free(path);
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptMalformedJson) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  char *path = corrupt_header(src, "json.safetensors", "\"a\":", "\"a\" ");
  TP_ASSERT(path != NULL);
  expect_open_error(path, TP_ERROR_FORMAT, "header is not valid JSON");
  g_free(path);
  /* A NUL byte inside the header (the tensor name "a" becomes "\0"). */
  char *buf = NULL;
  gsize len = 0;
  TP_ASSERT(g_file_get_contents(src, &buf, &len, NULL));
  char *hit = g_strstr_len(buf + 8, (gssize)len - 8, "\"a\":");
  TP_ASSERT(hit != NULL);
  hit[1] = '\0';
  path = g_build_filename(dir, "nul.safetensors", NULL);
  TP_ASSERT(g_file_set_contents(path, buf, len, NULL));
  expect_open_error(path, TP_ERROR_FORMAT, "header contains a NUL byte");
  g_free(buf);
  g_free(path);
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptHeaderStructure) {
  char *dir = tp_test_tmpdir();
  char *src = write_small(dir, "m.safetensors");
  struct {
    const char *from, *to, *msg;
  } cases[] = {
      {"{\"format\":\"pt\"}", "{\"format\":1}  ", "\"__metadata__\" entry \"format\" must be a string"},
      {"{\"format\":\"pt\"}", "[]", "\"__metadata__\" must be a JSON object of strings, found an array"},
      {"\"dtype\":\"F32\"", "\"dtype\":32", "tensor \"a\": expected \"dtype\" as a string, found an integer"},
      {"\"shape\":[2,3]", "\"shape\":\"2x3\"", "tensor \"a\": expected \"shape\" as an array"},
      {"[2,3]", "[1,1,1,1,1,1,2,3,1]", "tensor \"a\": expected at most 8 dimensions, found 9"},
      {"[2,3]", "[2.0,3]", "tensor \"a\": shape[0] must be a non-negative integer"},
      {"[0,24]", "[0]", "tensor \"a\": expected \"data_offsets\" as [begin, end]"},
      {"\"a\":{", "\"a\":7,\"x\":{", "tensor \"a\": expected an object {dtype, shape, data_offsets}, found an integer"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *name = g_strdup_printf("case%zu.safetensors", i);
    char *path = corrupt_header(src, name, cases[i].from, cases[i].to);
    if (path) expect_open_error(path, TP_ERROR_FORMAT, cases[i].msg);
    g_free(path);
    g_free(name);
  }
  g_free(src);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptHeaderNotAnObject) {
  char *dir = tp_test_tmpdir();
  char *path = g_build_filename(dir, "array.safetensors", NULL);
  /* Header "[1]" padded to 8 bytes, no data. */
  TP_ASSERT(g_file_set_contents(path, "\x08\0\0\0\0\0\0\0[1]     ", 16, NULL));
  expect_open_error(path, TP_ERROR_FORMAT, "the header must be a JSON object, found an array");
  TP_ASSERT(g_file_set_contents(path, "\0\0\0\0\0\0\0\0", 8, NULL));
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open(path, &err);
  TP_CHECK(st == NULL); /* an empty header is not "{}" */
  tp_safetensors_close(st);
  TP_CHECK(err != NULL && err->code == TP_ERROR_FORMAT);
  g_clear_error(&err);
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, CorruptShorterThanEightBytes) {
  char *dir = tp_test_tmpdir();
  char *path = g_build_filename(dir, "short.safetensors", NULL);
  TP_ASSERT(g_file_set_contents(path, "\x10\0\0\0\0", 5, NULL));
  expect_open_error(path, TP_ERROR_FORMAT, "file is 5 bytes, shorter than the 8-byte header length");
  TP_ASSERT(g_file_set_contents(path, "", 0, NULL));
  expect_open_error(path, TP_ERROR_FORMAT, "file is 0 bytes");
  g_free(path);
  g_free(dir);
}

TP_TEST(Safetensors, MissingFile) {
  char *dir = tp_test_tmpdir();
  char *path = g_build_filename(dir, "absent.safetensors", NULL);
  expect_open_error(path, TP_ERROR_IO, "cannot open the safetensors file");
  g_free(path);
  g_free(dir);
}

/* ---- item 13: as strict as the reference implementation ---- */

/* A file image: the header JSON (length-prefixed) then data_len bytes. */
static GBytes *raw_file(const char *header, size_t data_len) {
  size_t hl = strlen(header);
  uint8_t *buf = g_malloc0(8 + hl + data_len + 1);
  put_u64_le(buf, hl);
  memcpy(buf + 8, header, hl);
  return g_bytes_new_take(buf, 8 + hl + data_len);
}

static void expect_bytes_error(const char *header, size_t data_len, const char *part) {
  GBytes *b = raw_file(header, data_len);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open_bytes(b, "x.safetensors", &err);
  if (st) {
    TP_FAILF("accepted %s", header);
    tp_safetensors_close(st);
  }
  TP_CHECK_ERROR(err, TP_ERROR_FORMAT, part);
  g_bytes_unref(b);
}

static void expect_bytes_ok(const char *header, size_t data_len, guint n) {
  GBytes *b = raw_file(header, data_len);
  GError *err = NULL;
  tp_safetensors *st = tp_safetensors_open_bytes(b, "x.safetensors", &err);
  if (!st) TP_FAILF("refused %s: %s", header, err->message);
  else TP_CHECK_INT_EQ(tp_safetensors_count(st), n);
  g_clear_error(&err);
  if (st) tp_safetensors_close(st);
  g_bytes_unref(b);
}

#define F32_2(off0, off1) "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" #off0 "," #off1 "]}"

TP_TEST(Safetensors, CorruptGapBetweenTensors) {
  expect_bytes_error("{\"a\":" F32_2(0, 8) ",\"b\":" F32_2(12, 20) "}", 20,
                     "4 unused bytes [8, 12) before tensor \"b\"");
  /* the same gap whatever the order of the header's entries */
  expect_bytes_error("{\"b\":" F32_2(12, 20) ",\"a\":" F32_2(0, 8) "}", 20,
                     "4 unused bytes [8, 12) before tensor \"b\"");
  /* nothing may come before the first tensor either */
  expect_bytes_error("{\"a\":" F32_2(4, 12) "}", 12, "4 unused bytes [0, 4) before tensor \"a\"");
}

TP_TEST(Safetensors, CorruptBytesLeftOverAfterTheLastTensor) {
  expect_bytes_error("{\"a\":" F32_2(0, 8) ",\"b\":" F32_2(8, 16) "}", 20,
                     "the data section has 20 bytes but the tensors cover 16");
  expect_bytes_error("{}", 4, "the data section has 4 bytes but the tensors cover 0");
}

TP_TEST(Safetensors, CorruptDuplicateNamesOrKeys) {
  /* json-glib would keep the last "a": the reader must refuse, not pick one */
  expect_bytes_error("{\"a\":" F32_2(0, 8) ",\"a\":" F32_2(8, 16) "}", 16,
                     "names \"a\" twice");
  expect_bytes_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],"
                     "\"data_offsets\":[0,8]}}", 8, "names \"dtype\" twice");
  expect_bytes_error("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "names \"k\" twice");
}

TP_TEST(Safetensors, TilingHoldsInAnyHeaderOrder) {
  expect_bytes_ok("{\"b\":" F32_2(8, 16) ",\"a\":" F32_2(0, 8) "}", 16, 2);
  /* an empty tensor owns no bytes, wherever it sits */
  expect_bytes_ok("{\"a\":" F32_2(0, 8) ",\"e\":{\"dtype\":\"F32\",\"shape\":[0],"
                  "\"data_offsets\":[8,8]},\"b\":" F32_2(8, 16) "}", 16, 3);
  expect_bytes_ok("{}", 0, 0);
}
