#version 450
// Cross-entropy over logits [batch, classes] with i32 labels.
// Forward: loss[0] = mean_b (logsumexp(z_b) - z_b[label_b]); one workgroup,
//   rows split over invocations, summed in a fixed order.
// BACKWARD: dz += dloss[0] / batch * (softmax(z) - onehot), a workgroup per row.
// COUNT: out[0] = #(argmax_c z_b == label_b), the first maximum wins, a
//   row with a NaN counts as wrong.
// Labels outside [0, classes) are reported.
layout(local_size_x = 128) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint batch, classes;
} pc;
#include "common.glsl"
#include "reduce.glsl"
#include "rows.glsl"

layout(std430, binding = 1) buffer O { float o[]; };            // loss / dlogits / count
layout(std430, binding = 2) readonly buffer Z { float z[]; };   // logits
layout(std430, binding = 3) readonly buffer L { int labels[]; };
layout(std430, binding = 4) readonly buffer D { float dloss[]; };

bool label_ok(uint b, uint kind) {
  int lab = labels[BOFF(3) + b];
  if (lab < 0 || lab >= int(pc.classes)) {
    report(kind, lab, b, int(pc.classes));
    return false;
  }
  return true;
}

#if !defined(BACKWARD) && !defined(COUNT)
// log(1 + x) without the cancellation of log near 1 (GLSL's log has only
// 2^-21 absolute accuracy there): 2 atanh(x / (2 + x)) as a series.
float log1p_acc(float x) {
  if (x > 0.5) return log(1.0 + x);
  float s = x / (2.0 + x), s2 = s * s;
  return 2.0 * s *
         (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 / 11.0)))));
}

// Per row: (max - z[label]) + log1p(sum over the non-maximal classes of
// exp(z - max)): a confident, correct row's tiny loss keeps its digits.
void main() {
  uint oo = BOFF(1), oz = BOFF(2), ol = BOFF(3);
  uint t = gl_LocalInvocationID.x, W = gl_WorkGroupSize.x;
  float s = 0.0;
  for (uint b = t; b < pc.batch; b += W) {
    if (!label_ok(b, ERR_CE_FWD_LABEL)) continue;
    uint base = oz + b * pc.classes;
    float mx = z[base];
    uint arg = 0u;
    for (uint c = 1u; c < pc.classes; c++)
      if (z[base + c] > mx) {
        mx = z[base + c];
        arg = c;
      }
    float rest = 0.0;
    for (uint c = 0u; c < pc.classes; c++)
      if (c != arg) rest += exp_fast(z[base + c] - mx);
    s += (mx - z[base + uint(labels[ol + b])]) + log1p_acc(rest);
  }
  float total = wg_sum(s);
  if (t == 0u) o[oo] = total / float(pc.batch);
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
void main() {
  uint oo = BOFF(1), oz = BOFF(2), ol = BOFF(3);
  uint t = gl_LocalInvocationID.x, W = gl_WorkGroupSize.x;
  float n = 0.0;
  for (uint b = t; b < pc.batch; b += W) {
    if (!label_ok(b, ERR_COUNT_LABEL)) continue;
    uint base = oz + b * pc.classes;
    float best = z[base];
    uint arg = 0u;
    bool nan = isnan(best);
    for (uint c = 1u; c < pc.classes; c++) {
      float v = z[base + c];
      nan = nan || isnan(v);
      if (v > best) {
        best = v;
        arg = c;
      }
    }
    if (!nan && int(arg) == labels[ol + b]) n += 1.0;
  }
  float total = wg_sum(n);
  if (t == 0u) o[oo] = total;
}
#endif
