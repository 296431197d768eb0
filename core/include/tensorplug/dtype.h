/* tensorplug/dtype.h — element types of tensors and their conversions. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TP_I8 is a compute type only (tp_ctx_set_precision): no tensor stores it. */
typedef enum { TP_F32 = 0, TP_BF16 = 1, TP_F16 = 2, TP_I32 = 3, TP_I8 = 4 } tp_dtype;

size_t tp_dtype_size(tp_dtype t);
const char *tp_dtype_name(tp_dtype t); /* "f32", "bf16", "f16", "i32", "i8" */

/* Round-to-nearest-even conversions, NaN/Inf preserved. */
uint16_t tp_f32_to_bf16(float f);
float tp_bf16_to_f32(uint16_t h);
uint16_t tp_f32_to_f16(float f);
float tp_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
