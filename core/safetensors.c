/* core/safetensors.c — safetensors reader (mmap, validated before any use)
 * and atomic writer.
 *
 * Every check happens in tp_safetensors_open: once it returns, callers may
 * trust every tp_st_tensor (data inside the mapping, nbytes equal to
 * numel x elem_size, no two tensors sharing bytes). The rules and the error
 * messages are listed in docs/formats.md. */
#include "tensorplug/safetensors.h"

#include "tensorplug/error.h"
#include "tensorplug/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

/* The format is little-endian on disk; data pointers are handed out as they
 * lie in the mapping, so a big-endian host would need byte swapping
 * everywhere. Refuse to build there rather than read garbage. */
#if G_BYTE_ORDER != G_LITTLE_ENDIAN
#error "tensorplug's safetensors support assumes a little-endian host"
#endif

/* Same limit as the reference Rust implementation: a real header is a few
 * hundred KB at most; anything bigger is corruption, not a model. */
#define TP_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

#define HINT_CORRUPT "The file is truncated or corrupt: download it again."
#define HINT_REEXPORT "The file is corrupt or was written by a broken exporter: download or export it again."

struct tp_safetensors {
  char *path;           /* or the display name of an in-memory buffer */
  GBytes *bytes;        /* the mapping (or the caller's buffer), kept alive */
  tp_st_tensor *tensors; /* file order */
  guint n;
  GHashTable *by_name;  /* name -> tp_st_tensor* (names owned by tensors[]) */
  GHashTable *metadata; /* str -> str, owned */
};

/* ---- dtype table ------------------------------------------------------- */

typedef struct {
  const char *name;
  size_t size;
  int tp; /* tp_dtype, -1 when tensorplug has no such element type */
} st_dtype_info;

/* Every byte-sized dtype of the safetensors spec. The sub-byte ones (F4,
 * F6_*) are not listed: no BERT-family checkpoint uses them and their byte
 * count is not numel x size. */
static const st_dtype_info st_dtypes[] = {
    {"F64", 8, -1},     {"F32", 4, TP_F32},     {"F16", 2, TP_F16},     {"BF16", 2, TP_BF16},
    {"I64", 8, -1},     {"I32", 4, TP_I32},     {"I16", 2, -1},         {"I8", 1, -1},
    {"U64", 8, -1},     {"U32", 4, -1},         {"U16", 2, -1},         {"U8", 1, -1},
    {"BOOL", 1, -1},    {"F8_E4M3", 1, -1},     {"F8_E5M2", 1, -1},     {"F8_E8M0", 1, -1},
    {"C64", 8, -1},
};

static const st_dtype_info *st_dtype_lookup(const char *name) {
  for (size_t i = 0; i < G_N_ELEMENTS(st_dtypes); i++)
    if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
  return NULL;
}

static const char *st_dtype_name_of(tp_dtype t) {
  switch (t) {
  case TP_F32: return "F32";
  case TP_BF16: return "BF16";
  case TP_F16: return "F16";
  case TP_I32: return "I32";
  case TP_I8: return NULL; /* a compute type only: no tensor holds it */
  }
  return NULL;
}

/* ---- reading ----------------------------------------------------------- */

void tp_safetensors_close(tp_safetensors *st) {
  if (!st) return;
  if (st->by_name) g_hash_table_unref(st->by_name);
  if (st->metadata) g_hash_table_unref(st->metadata);
  for (guint i = 0; i < st->n; i++) g_free((char *)st->tensors[i].name);
  g_free(st->tensors);
  if (st->bytes) g_bytes_unref(st->bytes);
  g_free(st->path);
  g_free(st);
}

/* How a JSON node reads in an error message: "an array", "a string"... */
static const char *st_node_kind(JsonNode *node) {
  if (!node) return "nothing";
  switch (json_node_get_node_type(node)) {
  case JSON_NODE_OBJECT: return "an object";
  case JSON_NODE_ARRAY: return "an array";
  case JSON_NODE_NULL: return "null";
  case JSON_NODE_VALUE: break;
  }
  GType t = json_node_get_value_type(node);
  if (t == G_TYPE_STRING) return "a string";
  if (t == G_TYPE_INT64) return "an integer";
  if (t == G_TYPE_BOOLEAN) return "a boolean";
  return "a number";
}

/* A JSON integer >= 0. json-glib stores integers as gint64 and anything with
 * a fraction or exponent as a double: both of those are refused. */
static bool st_node_uint(JsonNode *node, int64_t *out) {
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return false;
  int64_t v = json_node_get_int(node);
  if (v < 0) return false;
  *out = v;
  return true;
}

static bool st_parse_metadata(tp_safetensors *st, JsonNode *node, GError **err) {
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: \"__metadata__\" must be a JSON object of strings, found %s. " HINT_REEXPORT,
                st->path, st_node_kind(node));
    return false;
  }
  JsonObject *obj = json_node_get_object(node);
  GList *members = json_object_get_members(obj);
  for (GList *l = members; l; l = l->next) {
    const char *key = l->data;
    JsonNode *v = json_object_get_member(obj, key);
    if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: \"__metadata__\" entry \"%s\" must be a string, found %s. " HINT_REEXPORT,
                  st->path, key, st_node_kind(v));
      g_list_free(members);
      return false;
    }
    g_hash_table_insert(st->metadata, g_strdup(key), g_strdup(json_node_get_string(v)));
  }
  g_list_free(members);
  return true;
}

static bool st_parse_shape(const char *path, const char *name, JsonObject *entry,
                           tp_st_tensor *t, GError **err) {
  JsonNode *node = json_object_get_member(entry, "shape");
  if (!node || !JSON_NODE_HOLDS_ARRAY(node)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": expected \"shape\" as an array of integers, found %s. " HINT_REEXPORT,
                path, name, node ? st_node_kind(node) : "no \"shape\"");
    return false;
  }
  JsonArray *arr = json_node_get_array(node);
  guint nd = json_array_get_length(arr);
  if (nd > TP_ST_MAX_DIMS) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": expected at most %d dimensions, found %u. " HINT_REEXPORT, path,
                name, TP_ST_MAX_DIMS, nd);
    return false;
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (guint d = 0; d < nd; d++) {
    int64_t v;
    if (!st_node_uint(json_array_get_element(arr, d), &v)) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: tensor \"%s\": shape[%u] must be a non-negative integer. " HINT_REEXPORT,
                  path, name, d);
      return false;
    }
    t->shape[d] = v;
    /* Keep multiplying after an overflow only to notice a later 0 dim,
     * which makes the product legitimately 0. */
    if (__builtin_mul_overflow(numel, (uint64_t)v, &numel)) overflow = true;
  }
  for (guint d = 0; d < nd; d++)
    if (t->shape[d] == 0) numel = 0, overflow = false;
  if (overflow || numel > (uint64_t)INT64_MAX) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": the shape's element count overflows 64 bits. " HINT_CORRUPT,
                path, name);
    return false;
  }
  t->ndim = (int)nd;
  t->numel = (int64_t)numel;
  return true;
}

static bool st_parse_offsets(const char *path, const char *name, JsonObject *entry,
                             int64_t *begin, int64_t *end, GError **err) {
  JsonNode *node = json_object_get_member(entry, "data_offsets");
  JsonArray *arr = node && JSON_NODE_HOLDS_ARRAY(node) ? json_node_get_array(node) : NULL;
  if (!arr || json_array_get_length(arr) != 2 ||
      !st_node_uint(json_array_get_element(arr, 0), begin) ||
      !st_node_uint(json_array_get_element(arr, 1), end)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": expected \"data_offsets\" as [begin, end] of non-negative "
                "integers. " HINT_REEXPORT,
                path, name);
    return false;
  }
  if (*begin > *end) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                "]: expected begin <= end. " HINT_CORRUPT,
                path, name, *begin, *end);
    return false;
  }
  return true;
}

/* Validates one header entry and fills *t (except the name). */
static bool st_parse_tensor(tp_safetensors *st, const char *name, JsonNode *node,
                            const uint8_t *data, uint64_t data_size, tp_st_tensor *t,
                            GError **err) {
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": expected an object {dtype, shape, data_offsets}, found %s. "
                HINT_REEXPORT,
                st->path, name, st_node_kind(node));
    return false;
  }
  JsonObject *entry = json_node_get_object(node);
  JsonNode *dn = json_object_get_member(entry, "dtype");
  if (!dn || !JSON_NODE_HOLDS_VALUE(dn) || json_node_get_value_type(dn) != G_TYPE_STRING) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": expected \"dtype\" as a string, found %s. " HINT_REEXPORT,
                st->path, name, dn ? st_node_kind(dn) : "no \"dtype\"");
    return false;
  }
  const char *dname = json_node_get_string(dn);
  const st_dtype_info *info = st_dtype_lookup(dname);
  if (!info) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": unknown dtype \"%s\"; expected one of F64 F32 F16 BF16 "
                "I64 I32 I16 I8 U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2 F8_E8M0 C64. " HINT_REEXPORT,
                st->path, name, dname);
    return false;
  }
  t->dtype_name = info->name; /* static: outlives the parser */
  t->dtype = info->tp;
  t->elem_size = info->size;

  if (!st_parse_shape(st->path, name, entry, t, err)) return false;
  int64_t begin, end;
  if (!st_parse_offsets(st->path, name, entry, &begin, &end, err)) return false;
  if ((uint64_t)end > data_size) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": data_offsets end %" G_GINT64_FORMAT
                " is outside the data section: expected at most %" G_GUINT64_FORMAT
                " bytes, found %" G_GINT64_FORMAT ". " HINT_CORRUPT,
                st->path, name, end, data_size, end);
    return false;
  }
  uint64_t want;
  if (__builtin_mul_overflow((uint64_t)t->numel, (uint64_t)info->size, &want)) want = UINT64_MAX;
  uint64_t have = (uint64_t)(end - begin);
  if (want != have) {
    GString *shape = g_string_new("[");
    for (int d = 0; d < t->ndim; d++)
      g_string_append_printf(shape, "%s%" G_GINT64_FORMAT, d ? ", " : "", t->shape[d]);
    g_string_append_c(shape, ']');
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: tensor \"%s\": shape %s x %s (%zu bytes each) needs %" G_GUINT64_FORMAT
                " bytes, but data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                "] hold %" G_GUINT64_FORMAT ". " HINT_REEXPORT,
                st->path, name, shape->str, info->name, info->size, want, begin, end, have);
    g_string_free(shape, TRUE);
    return false;
  }
  t->data = data + begin;
  t->nbytes = (size_t)have;
  return true;
}

static int st_cmp_by_offset(const void *a, const void *b) {
  const tp_st_tensor *x = *(tp_st_tensor *const *)a, *y = *(tp_st_tensor *const *)b;
  if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
  return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* As strict as the reference implementation: the byte ranges, sorted by
 * start (whatever the order of the header's entries), tile the data section
 * exactly — each starts where the previous one ended, the first at 0, the
 * last ends at the end of the file: no gap, no overlap, nothing left over. */
static bool st_check_tiling(tp_safetensors *st, const uint8_t *data, uint64_t data_size,
                            GError **err) {
  tp_st_tensor **sorted = g_new(tp_st_tensor *, st->n ? st->n : 1);
  for (guint i = 0; i < st->n; i++) sorted[i] = &st->tensors[i];
  qsort(sorted, st->n, sizeof *sorted, st_cmp_by_offset);
  uint64_t at = 0;
  const tp_st_tensor *prev = NULL;
  bool ok = true;
  for (guint i = 0; i < st->n && ok; i++) {
    const tp_st_tensor *t = sorted[i];
    uint64_t begin = (uint64_t)((const uint8_t *)t->data - data);
    if (begin < at) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: tensors \"%s\" [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] and \"%s\" "
                  "[%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "] overlap in the data section; "
                  "expected disjoint data_offsets. " HINT_REEXPORT,
                  st->path, prev->name, at - prev->nbytes, at, t->name, begin,
                  begin + t->nbytes);
      ok = false;
    } else if (begin > at) {
      g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                  "%s: %" G_GUINT64_FORMAT " unused bytes [%" G_GUINT64_FORMAT ", %"
                  G_GUINT64_FORMAT ") before tensor \"%s\"; expected the tensors to fill the "
                  "data section without gaps. " HINT_REEXPORT,
                  st->path, begin - at, at, begin, t->name);
      ok = false;
    }
    at = begin + t->nbytes;
    prev = t;
  }
  if (ok && at != data_size) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: the data section has %" G_GUINT64_FORMAT " bytes but the tensors cover %"
                G_GUINT64_FORMAT "; expected no bytes left over. " HINT_CORRUPT,
                st->path, data_size, at);
    ok = false;
  }
  g_free(sorted);
  return ok;
}

/* Reads the 8-byte length and checks the header fits in the buffer. */
static bool st_check_sizes(const tp_safetensors *st, const uint8_t *buf, size_t size,
                           uint64_t *header_len, GError **err) {
  if (size < 8) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: file is %zu bytes, shorter than the 8-byte header length: not a "
                "safetensors file. " HINT_CORRUPT,
                st->path, size);
    return false;
  }
  uint64_t n;
  memcpy(&n, buf, 8);
  n = GUINT64_FROM_LE(n);
  if (n > size - 8) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: header length %" G_GUINT64_FORMAT " is larger than the file: expected at "
                "most %zu bytes after the 8-byte prefix. " HINT_CORRUPT,
                st->path, n, size - 8);
    return false;
  }
  if (n > TP_ST_MAX_HEADER) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: header length %" G_GUINT64_FORMAT " is larger than the %" G_GUINT64_FORMAT
                "-byte limit: not a safetensors file. " HINT_CORRUPT,
                st->path, n, TP_ST_MAX_HEADER);
    return false;
  }
  *header_len = n;
  return true;
}

/* json-glib keeps the last of duplicate keys silently; the reference
 * implementation refuses them. Counting the members parsed into each object
 * finds the first duplicate: the object's size stops growing. */
typedef struct {
  GHashTable *counts; /* JsonObject* -> members parsed so far */
  char *dup;          /* the first key seen twice in one object */
} st_dup_finder;

static void st_on_member(JsonParser *p, JsonObject *o, const char *name, gpointer user) {
  (void)p;
  st_dup_finder *f = user;
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(f->counts, o)) + 1;
  g_hash_table_insert(f->counts, o, GUINT_TO_POINTER(n));
  if (!f->dup && n != json_object_get_size(o)) f->dup = g_strdup(name);
}

static JsonParser *st_parse_header(const tp_safetensors *st, const char *json, uint64_t n,
                                   GError **err) {
  JsonParser *parser = json_parser_new_immutable();
  GError *jerr = NULL;
  st_dup_finder dups = {g_hash_table_new(g_direct_hash, g_direct_equal), NULL};
  g_signal_connect(parser, "object-member", G_CALLBACK(st_on_member), &dups);
  /* A NUL inside the header would make json-glib stop early or misreport;
   * a real header is plain UTF-8 JSON padded with spaces. */
  if (memchr(json, '\0', n)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: the %" G_GUINT64_FORMAT "-byte header contains a NUL byte: expected JSON "
                "text. " HINT_CORRUPT,
                st->path, n);
  } else if (!json_parser_load_from_data(parser, json, (gssize)n, &jerr)) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: the %" G_GUINT64_FORMAT "-byte header is not valid JSON: %s. " HINT_CORRUPT,
                st->path, n, jerr->message);
    g_error_free(jerr);
  } else if (dups.dup) {
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: the header names \"%s\" twice in one object; expected unique tensor "
                "names and keys. " HINT_REEXPORT,
                st->path, dups.dup);
  } else if (!json_parser_get_root(parser) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
    JsonNode *root = json_parser_get_root(parser);
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "%s: the header must be a JSON object, found %s. " HINT_CORRUPT, st->path,
                st_node_kind(root));
  } else {
    g_signal_handlers_disconnect_by_func(parser, st_on_member, &dups);
    g_hash_table_unref(dups.counts);
    return parser;
  }
  g_hash_table_unref(dups.counts);
  g_free(dups.dup);
  g_object_unref(parser);
  return NULL;
}

static bool st_load(tp_safetensors *st, GError **err) {
  gsize size = 0;
  const uint8_t *buf = g_bytes_get_data(st->bytes, &size);
  uint64_t n;
  if (!st_check_sizes(st, buf, size, &n, err)) return false;
  JsonParser *parser = st_parse_header(st, (const char *)buf + 8, n, err);
  if (!parser) return false;

  const uint8_t *data = buf + 8 + n;
  uint64_t data_size = size - 8 - n;
  JsonObject *root = json_node_get_object(json_parser_get_root(parser));
  GList *members = json_object_get_members(root); /* insertion = file order */
  st->tensors = g_new0(tp_st_tensor, g_list_length(members) + 1);
  bool ok = true;
  for (GList *l = members; l && ok; l = l->next) {
    const char *key = l->data;
    JsonNode *node = json_object_get_member(root, key);
    if (strcmp(key, "__metadata__") == 0) {
      ok = st_parse_metadata(st, node, err);
      continue;
    }
    tp_st_tensor *t = &st->tensors[st->n];
    ok = st_parse_tensor(st, key, node, data, data_size, t, err);
    if (ok) {
      t->name = g_strdup(key);
      st->n++;
      g_hash_table_insert(st->by_name, (gpointer)t->name, t);
    }
  }
  g_list_free(members);
  g_object_unref(parser);
  return ok && st_check_tiling(st, data, data_size, err);
}

tp_safetensors *tp_safetensors_open_bytes(GBytes *bytes, const char *name, GError **err) {
  g_return_val_if_fail(bytes != NULL, NULL);
  tp_safetensors *st = g_new0(tp_safetensors, 1);
  st->path = g_strdup(name ? name : "(memory)");
  st->bytes = g_bytes_ref(bytes);
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  if (!st_load(st, err)) {
    tp_safetensors_close(st);
    return NULL;
  }
  return st;
}

tp_safetensors *tp_safetensors_open(const char *path, GError **err) {
  g_return_val_if_fail(path != NULL, NULL);
  GError *ferr = NULL;
  /* Private read-only mapping: pages are shared with the page cache, so a
   * 450 MB model costs no copy. (A file truncated by someone else while
   * mapped would SIGBUS on access; we do not defend against that.) */
  GMappedFile *map = g_mapped_file_new(path, FALSE, &ferr);
  if (!map) {
    g_set_error(err, TP_ERROR, TP_ERROR_IO,
                "%s: cannot open the safetensors file: %s. Check the path (download the model "
                "with scripts/fetch-model.sh).",
                path, ferr->message);
    g_error_free(ferr);
    return NULL;
  }
  GBytes *bytes = g_mapped_file_get_bytes(map); /* holds its own ref on map */
  g_mapped_file_unref(map);
  tp_safetensors *st = tp_safetensors_open_bytes(bytes, path, err);
  g_bytes_unref(bytes);
  return st;
}

const char *tp_safetensors_path(const tp_safetensors *st) { return st->path; }

guint tp_safetensors_count(const tp_safetensors *st) { return st->n; }

const tp_st_tensor *tp_safetensors_at(const tp_safetensors *st, guint i) {
  return i < st->n ? &st->tensors[i] : NULL;
}

const tp_st_tensor *tp_safetensors_find(const tp_safetensors *st, const char *name) {
  return name ? g_hash_table_lookup(st->by_name, name) : NULL;
}

const char *tp_safetensors_metadata(const tp_safetensors *st, const char *key) {
  return key ? g_hash_table_lookup(st->metadata, key) : NULL;
}

bool tp_st_tensor_to_f32(const tp_st_tensor *t, float *dst, GError **err) {
  const uint8_t *src = t->data;
  size_t n = (size_t)t->numel;
  switch (t->dtype) {
  case TP_F32:
    if (n) memcpy(dst, src, n * 4);
    return true;
  case TP_BF16:
  case TP_F16:
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, src + 2 * i, 2); /* the mapping gives no alignment guarantee */
      dst[i] = t->dtype == TP_BF16 ? tp_bf16_to_f32(h) : tp_f16_to_f32(h);
    }
    return true;
  default:
    g_set_error(err, TP_ERROR, TP_ERROR_FORMAT,
                "tensor \"%s\": cannot convert dtype %s to F32: expected F32, F16 or BF16. "
                "Convert the checkpoint to a floating-point dtype.",
                t->name, t->dtype_name);
    return false;
  }
}

/* ---- writing ----------------------------------------------------------- */

static bool st_item_nbytes(const tp_st_write_item *it, guint i, size_t *out, GError **err) {
  const char *dname = st_dtype_name_of(it->dtype);
  if (!it->name || !*it->name || strcmp(it->name, "__metadata__") == 0 || !dname ||
      it->ndim < 0 || it->ndim > TP_ST_MAX_DIMS) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "safetensors write: item %u (\"%s\"): needs a non-empty name other than "
                "__metadata__, a dtype among F32 BF16 F16 I32 and 0..%d dimensions",
                i, it->name ? it->name : "(null)", TP_ST_MAX_DIMS);
    return false;
  }
  uint64_t total = tp_dtype_size(it->dtype);
  for (int d = 0; d < it->ndim; d++) {
    if (it->shape[d] < 0 || __builtin_mul_overflow(total, (uint64_t)it->shape[d], &total)) {
      g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                  "safetensors write: tensor \"%s\": shape[%d] = %" G_GINT64_FORMAT
                  " is negative or the size overflows",
                  it->name, d, it->shape[d]);
      return false;
    }
  }
  if (total > SIZE_MAX || (total > 0 && !it->data)) {
    g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "safetensors write: tensor \"%s\": %" G_GUINT64_FORMAT " bytes but no data",
                it->name, total);
    return false;
  }
  *out = (size_t)total;
  return true;
}

static void st_add_metadata(JsonBuilder *b, GHashTable *metadata) {
  json_builder_set_member_name(b, "__metadata__");
  json_builder_begin_object(b);
  if (!metadata) {
    json_builder_set_member_name(b, "format");
    json_builder_add_string_value(b, "pt");
  } else {
    /* Sorted so that the same inputs always give the same bytes. */
    GList *keys = g_list_sort(g_hash_table_get_keys(metadata), (GCompareFunc)strcmp);
    for (GList *l = keys; l; l = l->next) {
      json_builder_set_member_name(b, l->data);
      json_builder_add_string_value(b, g_hash_table_lookup(metadata, l->data));
    }
    g_list_free(keys);
  }
  json_builder_end_object(b);
}

/* The header JSON, padded with spaces to a multiple of 8 so that the data
 * section starts 8-aligned in the file (and in any mapping of it). */
static char *st_build_header(const tp_st_write_item *items, guint n, const size_t *nbytes,
                             GHashTable *metadata, size_t *len_out) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  st_add_metadata(b, metadata);
  uint64_t off = 0;
  for (guint i = 0; i < n; i++) {
    json_builder_set_member_name(b, items[i].name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dtype");
    json_builder_add_string_value(b, st_dtype_name_of(items[i].dtype));
    json_builder_set_member_name(b, "shape");
    json_builder_begin_array(b);
    for (int d = 0; d < items[i].ndim; d++) json_builder_add_int_value(b, items[i].shape[d]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "data_offsets");
    json_builder_begin_array(b);
    json_builder_add_int_value(b, (gint64)off);
    off += nbytes[i];
    json_builder_add_int_value(b, (gint64)off);
    json_builder_end_array(b);
    json_builder_end_object(b);
  }
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  gsize len = 0;
  char *json = json_generator_to_data(gen, &len);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  size_t padded = (len + 7) / 8 * 8;
  json = g_realloc(json, padded + 1);
  memset(json + len, ' ', padded - len);
  json[padded] = '\0';
  *len_out = padded;
  return json;
}

typedef struct {
  const char *header;
  size_t hlen;
  const tp_st_write_item *items;
  guint n;
  const size_t *nbytes;
} st_write_job;

/* Streams header and tensors into fd; errno is left set on failure. */
static bool st_write_stream(int fd, void *user) {
  const st_write_job *j = user;
  uint64_t le = GUINT64_TO_LE((uint64_t)j->hlen);
  if (!tp_fd_write_all(fd, &le, 8) || !tp_fd_write_all(fd, j->header, j->hlen)) return false;
  for (guint i = 0; i < j->n; i++)
    if (j->nbytes[i] && !tp_fd_write_all(fd, j->items[i].data, j->nbytes[i])) return false;
  return true;
}

static bool st_check_unique(const tp_st_write_item *items, guint n, GError **err) {
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  bool ok = true;
  for (guint i = 0; i < n && ok; i++) {
    if (!g_hash_table_add(seen, (gpointer)items[i].name)) {
      g_set_error(err, TP_ERROR, TP_ERROR_INVALID_ARGUMENT,
                  "safetensors write: tensor name \"%s\" appears twice", items[i].name);
      ok = false;
    }
  }
  g_hash_table_unref(seen);
  return ok;
}

bool tp_safetensors_write(const char *path, const tp_st_write_item *items, guint n,
                          GHashTable *metadata, GError **err) {
  g_return_val_if_fail(path != NULL && (items != NULL || n == 0), false);
  size_t *nbytes = g_new0(size_t, n ? n : 1);
  for (guint i = 0; i < n; i++) {
    if (!st_item_nbytes(&items[i], i, &nbytes[i], err)) {
      g_free(nbytes);
      return false;
    }
  }
  if (!st_check_unique(items, n, err)) {
    g_free(nbytes);
    return false;
  }
  size_t hlen;
  char *header = st_build_header(items, n, nbytes, metadata, &hlen);

  /* A reader sees the old file or the complete new one, never a partial one,
   * and the new one survives a power cut once this returns. */
  st_write_job job = {header, hlen, items, n, nbytes};
  bool ok = tp_file_write_durable_with(path, st_write_stream, &job, err);
  g_free(header);
  g_free(nbytes);
  return ok;
}
