#version 450
#extension GL_GOOGLE_include_directive : require
// Cross-entropy over logits [batch, classes] with i32 labels, one subgroup
// per row (rows.glsl).
// Forward: per-row losses logsumexp(z_b) - z_b[label_b] (averaged by sumsq.comp).
// BACKWARD: dz += dloss[0] / batch * (softmax(z) - onehot).
// COUNT: per-row 1 when argmax_c z_b == label_b (the first maximum wins, a
//   row with a NaN counts as wrong), else 0 (summed by sumsq.comp).
// Labels outside [0, classes) are reported.
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint batch, classes;
} pc;
#include "common.glsl"
#include "rows.glsl"

layout(std430, binding = 1) buffer O { float o[]; };            // row losses / dlogits / row flags
layout(std430, binding = 2) readonly buffer Z { float z[]; };   // logits
layout(std430, binding = 3) readonly buffer L { int labels[]; };
layout(std430, binding = 4) readonly buffer D { float dloss[]; };

#if !defined(BACKWARD) && !defined(COUNT)
// log(1 + x) without the cancellation of log near 1 (GLSL's log has only
// 2^-21 absolute accuracy there): 2 atanh(x / (2 + x)) as a series.
float log1p_acc(float x) {
  if (x > 0.5) return log(1.0 + x);
  float s = x / (2.0 + x), s2 = s * s;
  return 2.0 * s *
         (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 / 11.0)))));
}

// A subgroup per row: loss[b] = (max - z[label]) + log1p(sum over the
// classes but the first maximal one of exp(z - max)), so a confident,
// correct row's tiny loss keeps its digits. The host sums loss[] in order.
void main() {
  uint oo = BOFF(1), oz = BOFF(2), ol = BOFF(3);
  for (uint b = row_first(); b < pc.batch; b += row_step()) {
    int lab = labels[ol + b];
    if (lab < 0 || lab >= int(pc.classes)) {
      if (subgroupElect()) {
        report(ERR_CE_FWD_LABEL, lab, b, int(pc.classes));
        o[oo + b] = 0.0;
      }
      continue;
    }
    uint base = oz + b * pc.classes;
    float mx = NEG_INF;
    for (uint c = LANE; c < pc.classes; c += LANES) mx = max(mx, z[base + c]);
    mx = subgroupMax(mx);
    uint first = 0xffffffffu;
    for (uint c = LANE; c < pc.classes; c += LANES)
      if (z[base + c] == mx) first = min(first, c);
    uint arg = subgroupMin(first);
    float rest = 0.0;
    for (uint c = LANE; c < pc.classes; c += LANES)
      if (c != arg) rest += exp_fast(z[base + c] - mx);
    rest = subgroupAdd(rest);
    if (subgroupElect()) o[oo + b] = (mx - z[base + uint(lab)]) + log1p_acc(rest);
  }
}
#elif defined(BACKWARD)
// softmax - onehot, a subgroup per row; at the label 1 - p is the others'
// share, summed directly (no cancellation).
void main() {
  uint oo = BOFF(1), oz = BOFF(2), ol = BOFF(3), od = BOFF(4);
  float g = dloss[od] / float(pc.batch);
  for (uint b = row_first(); b < pc.batch; b += row_step()) {
    int lab = labels[ol + b];
    if (lab < 0 || lab >= int(pc.classes)) {
      if (subgroupElect()) report(ERR_CE_BWD_LABEL, lab, b, int(pc.classes));
      continue;
    }
    uint base = b * pc.classes;
    float mx = NEG_INF;
    for (uint c = LANE; c < pc.classes; c += LANES) mx = max(mx, z[oz + base + c]);
    mx = subgroupMax(mx);
    float e = 0.0, other = 0.0;
    for (uint c = LANE; c < pc.classes; c += LANES) {
      float x = exp_fast(z[oz + base + c] - mx);
      e += x;
      other += int(c) == lab ? 0.0 : x;
    }
    float inv = 1.0 / subgroupAdd(e);
    other = subgroupAdd(other);
    for (uint c = LANE; c < pc.classes; c += LANES) {
      float d = int(c) == lab ? -other * inv : exp_fast(z[oz + base + c] - mx) * inv;
      o[oo + base + c] += g * d;
    }
  }
}
#else
// A subgroup per row: ok[b] = 1 when the first maximum is the label and the
// row has no NaN, else 0. The host sums ok[] in order.
void main() {
  uint oo = BOFF(1), oz = BOFF(2), ol = BOFF(3);
  for (uint b = row_first(); b < pc.batch; b += row_step()) {
    int lab = labels[ol + b];
    if (lab < 0 || lab >= int(pc.classes)) {
      if (subgroupElect()) {
        report(ERR_COUNT_LABEL, lab, b, int(pc.classes));
        o[oo + b] = 0.0;
      }
      continue;
    }
    uint base = oz + b * pc.classes;
    float mx = NEG_INF, nan = 0.0;
    for (uint c = LANE; c < pc.classes; c += LANES) {
      float v = z[base + c];
      if (isnan(v)) nan = 1.0;
      else mx = max(mx, v);
    }
    mx = subgroupMax(mx);
    nan = subgroupMax(nan);
    uint first = 0xffffffffu;
    for (uint c = LANE; c < pc.classes; c += LANES)
      if (z[base + c] == mx) first = min(first, c);
    uint arg = subgroupMin(first);
    if (subgroupElect()) o[oo + b] = nan == 0.0 && int(arg) == lab ? 1.0 : 0.0;
  }
}
#endif
