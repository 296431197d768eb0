#version 450
#extension GL_GOOGLE_include_directive : require
// y[i] = convert(x[i]) between f32 (0), bf16 (1) and f16 (2), round to
// nearest even, NaN stays NaN (integer operations only). 16-bit data is
// addressed as 16-bit elements.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n, xdt, ydt;
} pc;
#include "common.glsl"

layout(std430, binding = 1) writeonly buffer Y32 { uint y32[]; };
layout(std430, binding = 1) writeonly buffer Y16 { uint16_t y16[]; };
layout(std430, binding = 2) readonly buffer X32 { uint x32[]; };
layout(std430, binding = 2) readonly buffer X16 { uint16_t x16[]; };

void main() {
  uint oy = BOFF(1), ox = BOFF(2);
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) {
    uint f;
    if (pc.xdt == 0u) f = x32[ox + i];
    else if (pc.xdt == 1u) f = bf16_to_f32(uint(x16[ox + i]));
    else f = f16_to_f32(uint(x16[ox + i]));
    if (pc.ydt == 0u) y32[oy + i] = f;
    else if (pc.ydt == 1u) y16[oy + i] = uint16_t(f32_to_bf16(f));
    else y16[oy + i] = uint16_t(f32_to_f16(f));
  }
}
