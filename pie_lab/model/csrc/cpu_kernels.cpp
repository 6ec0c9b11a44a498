// pie_lab's CPU kernels (issue 22), built once per machine by pie_lab/model/cpu_kernels.py: the op
// schemas, and the row ops (RoPE with the K/V write, RMSNorm, silu * up). Attention: decode_attention.cpp.
#include <torch/library.h>

#include "common.h"

namespace pie_lab {
namespace {

// -- RoPE of q and k, and the K/V write, from one fused q|k|v projection ---------------------------
// qkv [T, (nh + 2 kvh) hd]; cos, sin [T, hd/2] in qkv's dtype; slots [T] pool slots (block * bs + offset).
// Returns q [T, nh, hd] rotated; rotated k and v go to the pool. Rounds as x1*c - x2*s and x2*c + x1*s
// in separate ops of qkv's dtype (apply_rope in model/llama.py).
template <typename T>
inline void rotate(const T* x, const T* c, const T* s, T* out, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const T a = T(f32(x[i]) * f32(c[i])), b = T(f32(x[i + half]) * f32(s[i]));
    const T e = T(f32(x[i + half]) * f32(c[i])), f = T(f32(x[i]) * f32(s[i]));
    out[i] = T(f32(a) - f32(b));
    out[i + half] = T(f32(e) + f32(f));
  }
}

at::Tensor rope_write_kv(const at::Tensor& qkv, int64_t nh, int64_t kvh, const at::Tensor& cos, const at::Tensor& sin,
                         at::Tensor pool, const at::Tensor& slots) {
  check_pool(pool, "pool");
  const int64_t T = qkv.size(0), hd = pool.size(4), half = hd / 2, bs = pool.size(2), G = pool.size(0);
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) == (nh + 2 * kvh) * hd && qkv.stride(1) == 1,
              "qkv must be [T, (heads + 2 kv_heads) * head_dim = ", (nh + 2 * kvh) * hd, "] with unit column stride, got ",
              qkv.sizes());
  TORCH_CHECK(kvh == pool.size(3) && hd % 2 == 0, "kv_heads=", kvh, " must equal the pool's ", pool.size(3));
  TORCH_CHECK(pool.scalar_type() == qkv.scalar_type() && cos.scalar_type() == qkv.scalar_type() &&
              sin.scalar_type() == qkv.scalar_type(), "qkv, cos, sin and the pool must share a dtype");
  TORCH_CHECK(cos.numel() == T * half && sin.numel() == T * half && cos.is_contiguous() && sin.is_contiguous(),
              "cos and sin must be contiguous [T=", T, ", head_dim/2=", half, "]");
  auto sl = slots.contiguous();
  TORCH_CHECK(sl.numel() == T && sl.scalar_type() == at::kLong, "slots must be int64 [T=", T, "]");
  const int64_t* sp = sl.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(sp[t] >= 0 && sp[t] < G * bs, "slot ", sp[t], " of token ", t, " is outside [0, ", G * bs, ")");
  auto q = at::empty({T, nh, hd}, qkv.options());
  const int64_t row = qkv.stride(0), tok = kvh * hd, blk = 2 * bs * tok;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, qkv.scalar_type(), "rope_write_kv", [&] {
    const scalar_t *x = qkv.data_ptr<scalar_t>(), *c = cos.data_ptr<scalar_t>(), *s = sin.data_ptr<scalar_t>();
    scalar_t *qo = q.data_ptr<scalar_t>(), *kv = pool.data_ptr<scalar_t>();
    at::parallel_for(0, T, std::max<int64_t>(1, 4096 / ((nh + 2 * kvh) * hd)), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const scalar_t *xt = x + t * row, *ct = c + t * half, *st = s + t * half;
        scalar_t* kdst = kv + (sp[t] / bs) * blk + (sp[t] % bs) * tok;
        scalar_t* vdst = kdst + bs * tok;
        for (int64_t h = 0; h < nh; ++h) rotate(xt + h * hd, ct, st, qo + (t * nh + h) * hd, half);
        for (int64_t h = 0; h < kvh; ++h) rotate(xt + (nh + h) * hd, ct, st, kdst + h * hd, half);
        std::copy(xt + (nh + kvh) * hd, xt + (nh + 2 * kvh) * hd, vdst);
      }
    });
  });
  return q;
}

// -- row ops ----------------------------------------------------------------------------------------
// RMSNorm as transformers computes it: h = x * rsqrt(mean(x^2) + eps) in float32, then weight * h.to(x.dtype).
at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  auto x = x_in.contiguous();
  const int64_t H = x.size(-1), R = x.numel() / H;
  TORCH_CHECK(weight.numel() == H && weight.scalar_type() == x.scalar_type(), "weight must be [", H, "] of x's dtype");
  auto w = weight.contiguous();
  auto y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "rms_norm", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, R, std::max<int64_t>(1, 16384 / H), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = xp + r * H;
        float acc[LANES] = {0};
        int64_t i = 0;
        for (; i + LANES <= H; i += LANES)
          for (int64_t j = 0; j < LANES; ++j) acc[j] += f32(xr[i + j]) * f32(xr[i + j]);
        float ss = 0;
        for (int64_t j = 0; j < LANES; ++j) ss += acc[j];
        for (; i < H; ++i) ss += f32(xr[i]) * f32(xr[i]);
        const float inv = 1.f / std::sqrt(ss / H + static_cast<float>(eps));
        for (int64_t k = 0; k < H; ++k) yp[r * H + k] = scalar_t(f32(wp[k]) * f32(scalar_t(f32(xr[k]) * inv)));
      }
    });
  });
  return y;
}

// silu(gate) * up from one fused gate|up projection gu [T, 2 I] -> [T, I].
at::Tensor silu_mul(const at::Tensor& gu_in) {
  auto gu = gu_in.contiguous();
  const int64_t I = gu.size(-1) / 2, R = gu.numel() / (2 * I);
  auto sizes = gu.sizes().vec();
  sizes.back() = I;
  auto y = at::empty(sizes, gu.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, gu.scalar_type(), "silu_mul", [&] {
    const scalar_t* gp = gu.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, R, std::max<int64_t>(1, 16384 / I), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t i = 0; i < I; ++i) {
          const float g = f32(gp[r * 2 * I + i]);
          const scalar_t silu = scalar_t(g / (1.f + fast_exp(-g)));
          yp[r * I + i] = scalar_t(f32(silu) * f32(gp[r * 2 * I + I + i]));
        }
    });
  });
  return y;
}

}  // namespace
}  // namespace pie_lab

TORCH_LIBRARY(pie_lab, m) {
  m.def("paged_decode_attention(Tensor q, Tensor pool, Tensor? staged, Tensor tables, Tensor context_lens, float scale, "
        "int window) -> Tensor");
  m.def("rope_write_kv(Tensor qkv, int nh, int kvh, Tensor cos, Tensor sin, Tensor(a!) pool, Tensor slots) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul(Tensor gu) -> Tensor");
}

TORCH_LIBRARY_IMPL(pie_lab, CPU, m) {
  m.impl("rope_write_kv", &pie_lab::rope_write_kv);
  m.impl("rms_norm", &pie_lab::rms_norm);
  m.impl("silu_mul", &pie_lab::silu_mul);
}
