/* tensorplug/safetensors.h — reading (mmap, fully validated) and writing the
 * Hugging Face safetensors format: 8-byte little-endian header length N, N
 * bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, optional
 * "__metadata__": {str: str}}, then the data section. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include "tensorplug/dtype.h"

G_BEGIN_DECLS

#define TP_ST_MAX_DIMS 8

typedef struct tp_st_tensor {
  const char *name;
  const char *dtype_name; /* as in the file: "F32", "BF16", "I64", ... */
  int dtype;              /* tp_dtype when representable (F32 BF16 F16 I32), else -1 */
  size_t elem_size;
  int ndim;
  int64_t shape[TP_ST_MAX_DIMS];
  int64_t numel;
  const void *data; /* inside the mapping; may be unaligned */
  size_t nbytes;
} tp_st_tensor;

typedef struct tp_safetensors tp_safetensors;

/* Maps and validates the whole file: header length within the file, JSON
 * well-formed, every dtype known, shape x dtype equal to its byte range,
 * ranges tiling the data section exactly (no gap, no overlap, nothing left
 * over), no duplicate names. Errors name the file and
 * the tensor (TP_ERROR_FORMAT / TP_ERROR_IO). */
tp_safetensors *tp_safetensors_open(const char *path, GError **err);
/* The same validation over an in-memory buffer (kept referenced until close);
 * name stands for the path in error messages (NULL: "(memory)"). Used by the
 * fuzzer and by callers that already hold the bytes. */
tp_safetensors *tp_safetensors_open_bytes(GBytes *bytes, const char *name, GError **err);
void tp_safetensors_close(tp_safetensors *st);

const char *tp_safetensors_path(const tp_safetensors *st);
guint tp_safetensors_count(const tp_safetensors *st);
const tp_st_tensor *tp_safetensors_at(const tp_safetensors *st, guint i); /* file order */
const tp_st_tensor *tp_safetensors_find(const tp_safetensors *st, const char *name);
/* __metadata__ value or NULL. */
const char *tp_safetensors_metadata(const tp_safetensors *st, const char *key);

/* Converts a tensor's elements (F32, F16, BF16) to f32 into dst[numel]. */
bool tp_st_tensor_to_f32(const tp_st_tensor *t, float *dst, GError **err);

/* A tensor to write: data holds numel elements of dtype (F32/BF16/F16/I32). */
typedef struct tp_st_write_item {
  const char *name;
  tp_dtype dtype;
  int ndim;
  int64_t shape[TP_ST_MAX_DIMS];
  const void *data;
} tp_st_write_item;

/* Writes atomically (temp file PATH.tmp-XXXXXX in the same folder, fsync,
 * rename). Tensors are written in the given order, contiguous, after a header
 * padded with spaces to a multiple of 8; metadata (string -> string) goes to
 * "__metadata__", NULL meaning {"format": "pt"}. Names must be unique. */
bool tp_safetensors_write(const char *path, const tp_st_write_item *items, guint n,
                          GHashTable *metadata, GError **err);

G_END_DECLS
