// plugins/vulkan/shaders/reduce.glsl — workgroup-wide sums and maxima:
// subgroup arithmetic first, then the subgroups' results in subgroup order
// (every invocation gets the total). Call from uniform control flow.
shared float red_buf[64];

float wg_sum(float v) {
  float s = subgroupAdd(v);
  if (subgroupElect()) red_buf[gl_SubgroupID] = s;
  barrier();
  float t = 0.0;
  for (uint i = 0u; i < gl_NumSubgroups; i++) t += red_buf[i];
  barrier();
  return t;
}

float wg_max(float v) {
  float s = subgroupMax(v);
  if (subgroupElect()) red_buf[gl_SubgroupID] = s;
  barrier();
  float t = red_buf[0];
  for (uint i = 1u; i < gl_NumSubgroups; i++) t = max(t, red_buf[i]);
  barrier();
  return t;
}
