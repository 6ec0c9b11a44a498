// Decode attention over paged K/V read in place (pool blocks and staged host blocks), one query per
// sequence: pie_lab::paged_decode_attention (model/cpu_kernels.py).
#include <torch/library.h>

#include "common.h"

namespace pie_lab {
namespace {

// The general loop (other head sizes, CPUs without AVX-512): s[j] = scale * <q_j, k> for the g query rows
// q (hd apart) sharing one key row k.
template <typename T>
inline void dots(const float* q, const T* k, int64_t g, int64_t hd, float scale, float* s, int64_t stride) {
  for (int64_t j = 0; j < g; ++j) {
    float acc[LANES] = {0};
    int64_t d = 0;
    for (; d + LANES <= hd; d += LANES)
      for (int64_t i = 0; i < LANES; ++i) acc[i] += q[j * hd + d + i] * f32(k[d + i]);
    for (int64_t w = LANES / 2; w > 0; w /= 2)
      for (int64_t i = 0; i < w; ++i) acc[i] += acc[i + w];
    float sum = acc[0];
    for (; d < hd; ++d) sum += q[j * hd + d] * f32(k[d]);
    s[j * stride] = sum * scale;
  }
}

// a[d] += w * v[d], d < hd.
template <typename T>
inline void axpy(float w, const T* v, float* a, int64_t hd) {
  for (int64_t d = 0; d < hd; ++d) a[d] += w * f32(v[d]);
}

template <typename T>
using FastDecode = void (*)(const float*, const T*, const T*, const int64_t*, int64_t, int64_t, float*, int64_t,
                            int64_t, float, float*, float*, float*, float*);

// -- decode attention over paged K/V, read in place ------------------------------------------------
// q [B, nh, hd]; pool [G, 2, bs, kvh, hd]; staged [S, 2, bs, kvh, hd] or none; tables [B, nb]:
// entry v >= 0 reads pool block v, v < 0 staged block ~v; context_lens [B]. Query b sits at position
// context_lens[b] - 1 and attends keys [max(0, ctx - window), ctx) (window <= 0: all).
#if defined(__AVX512F__)
// One sequence's decode attention, block by block with an online softmax (a running max and sum per
// query head, the outputs rescaled when the max grows), for head_dim = 16 NC and G query heads per kv
// head: each kv head's G queries and G outputs stay in registers while its keys and values stream by.
// acc [nh, hd], m, l [nh] and s [nh, bs] are the caller's scratch.
template <typename T, int NC, int G>
void decode_seq_fast(const float* qb, const T* pool, const T* staged, const int64_t* tab, int64_t first, int64_t n,
                     float* ob, int64_t kvh, int64_t bs, float scale, float* acc, float* m, float* l, float* s) {
  constexpr int64_t hd = NC * 16;
  const int64_t nh = kvh * G, tok = kvh * hd, half = bs * tok;
  std::fill(acc, acc + nh * hd, 0.f);
  std::fill(m, m + nh, -std::numeric_limits<float>::infinity());
  std::fill(l, l + nh, 0.f);
  for (int64_t blk = first / bs; blk * bs < n; ++blk) {
    const int64_t t0 = std::max(first, blk * bs) - blk * bs, t1 = std::min(n, blk * bs + bs) - blk * bs;
    const int64_t v = tab[blk];
    const T* K = (v >= 0 ? pool + v * 2 * half : staged + (~v) * 2 * half);
    const T* V = K + half;
    for (int64_t h = 0; h < kvh; ++h) {                      // scores s[i, t] of the G heads of kv head h
      __m512 q[G][NC];
      for (int j = 0; j < G; ++j)
        for (int c = 0; c < NC; ++c) q[j][c] = _mm512_loadu_ps(qb + (h * G + j) * hd + 16 * c);
      for (int64_t t = t0; t < t1; ++t) {
        const T* k = K + t * tok + h * hd;
        __m512 kc[NC];
        for (int c = 0; c < NC; ++c) kc[c] = load16(k + 16 * c);
        for (int j = 0; j < G; ++j) {
          __m512 a = _mm512_mul_ps(q[j][0], kc[0]);
          for (int c = 1; c < NC; ++c) a = _mm512_fmadd_ps(q[j][c], kc[c], a);
          s[(h * G + j) * bs + t] = _mm512_reduce_add_ps(a) * scale;
        }
      }
    }
    for (int64_t i = 0; i < nh; ++i) {                      // online softmax: new max, rescale, weights
      float* si = s + i * bs;
      const float mb = *std::max_element(si + t0, si + t1), mn = std::max(m[i], mb);
      const float corr = m[i] == -std::numeric_limits<float>::infinity() ? 0.f : fast_exp(m[i] - mn);
      float sum = 0;
      for (int64_t t = t0; t < t1; ++t) si[t] = fast_exp(si[t] - mn);
      for (int64_t t = t0; t < t1; ++t) sum += si[t];
      l[i] = l[i] * corr + sum;
      m[i] = mn;
      if (corr != 1.f)
        for (int64_t d = 0; d < hd; ++d) acc[i * hd + d] *= corr;
    }
    for (int64_t h = 0; h < kvh; ++h) {                     // acc[i] += sum_t s[i, t] V[t]
      __m512 o[G][NC];
      for (int j = 0; j < G; ++j)
        for (int c = 0; c < NC; ++c) o[j][c] = _mm512_loadu_ps(acc + (h * G + j) * hd + 16 * c);
      for (int64_t t = t0; t < t1; ++t) {
        const T* vr = V + t * tok + h * hd;
        __m512 vc[NC];
        for (int c = 0; c < NC; ++c) vc[c] = load16(vr + 16 * c);
        for (int j = 0; j < G; ++j) {
          const __m512 w = _mm512_set1_ps(s[(h * G + j) * bs + t]);
          for (int c = 0; c < NC; ++c) o[j][c] = _mm512_fmadd_ps(w, vc[c], o[j][c]);
        }
      }
      for (int j = 0; j < G; ++j)
        for (int c = 0; c < NC; ++c) _mm512_storeu_ps(acc + (h * G + j) * hd + 16 * c, o[j][c]);
    }
  }
  for (int64_t i = 0; i < nh; ++i)
    for (int64_t d = 0; d < hd; ++d) ob[i * hd + d] = acc[i * hd + d] / l[i];
}


template <typename T, int NC>
FastDecode<T> fast_for_g(int64_t g) {
  switch (g) {
    case 1: return decode_seq_fast<T, NC, 1>;
    case 2: return decode_seq_fast<T, NC, 2>;
    case 3: return decode_seq_fast<T, NC, 3>;
    case 4: return decode_seq_fast<T, NC, 4>;
    case 5: return decode_seq_fast<T, NC, 5>;
    case 6: return decode_seq_fast<T, NC, 6>;
    case 7: return decode_seq_fast<T, NC, 7>;
    case 8: return decode_seq_fast<T, NC, 8>;
    default: return nullptr;
  }
}

// The register-blocked path where it applies (float32 / bf16 K/V, head_dim 64 or 128, up to 8 query
// heads per kv head), else nullptr: the general loop below.
template <typename T>
FastDecode<T> fast_decoder(int64_t hd, int64_t g) {
  if constexpr (std::is_same<T, double>::value) {
    return nullptr;
  } else {
    return hd == 64 ? fast_for_g<T, 4>(g) : hd == 128 ? fast_for_g<T, 8>(g) : nullptr;
  }
}
#else
template <typename T>
FastDecode<T> fast_decoder(int64_t, int64_t) { return nullptr; }
#endif

template <typename T>
void decode_kernel(const float* q, const T* pool, const T* staged, const int64_t* tables, const int64_t* ctx,
                   float* out, int64_t B, int64_t nh, int64_t kvh, int64_t hd, int64_t bs, int64_t nb,
                   int64_t window, float scale) {
  // One task per sequence, all its kv heads together: each block's K (then V) half is read front to back.
  const int64_t g = nh / kvh, tok = kvh * hd, half = bs * tok, block = 2 * half;
  const FastDecode<T> fast = fast_decoder<T>(hd, g);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s, acc(nh * hd), ml(2 * nh), sb(fast ? nh * bs : 0);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = ctx[b];
      const int64_t first = window > 0 ? std::max<int64_t>(0, n - window) : 0, len = n - first;
      const float* qb = q + b * nh * hd;
      float* ob = out + b * nh * hd;
      if (len <= 0) { std::fill(ob, ob + nh * hd, 0.f); continue; }
      if (fast) {
        fast(qb, pool, staged, tables + b * nb, first, n, ob, kvh, bs, scale, acc.data(), ml.data(), ml.data() + nh,
             sb.data());
        continue;
      }
      s.assign(nh * len, 0.f);                               // scores of query head i at s[i * len + p - first]
      auto row = [&](int64_t p, int64_t which) {
        const int64_t v = tables[b * nb + p / bs];
        const T* base = v >= 0 ? pool + v * block : staged + (~v) * block;
        return base + which * half + (p % bs) * tok;
      };
      for (int64_t p = first; p < n; ++p) {
        const T* k = row(p, 0);
        for (int64_t h = 0; h < kvh; ++h) dots(qb + h * g * hd, k + h * hd, g, hd, scale, s.data() + h * g * len + p - first, len);
      }
      float* inv = ml.data();
      for (int64_t i = 0; i < nh; ++i) {
        float* si = s.data() + i * len;
        const float m = *std::max_element(si, si + len);
        float sum = 0;
        for (int64_t t = 0; t < len; ++t) si[t] = fast_exp(si[t] - m);
        for (int64_t t = 0; t < len; ++t) sum += si[t];
        inv[i] = 1.f / sum;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t p = first; p < n; ++p) {
        const T* v = row(p, 1);
        for (int64_t i = 0; i < nh; ++i) axpy(s[i * len + p - first], v + (i / g) * hd, acc.data() + i * hd, hd);
      }
      for (int64_t i = 0; i < nh; ++i)
        for (int64_t d = 0; d < hd; ++d) ob[i * hd + d] = acc[i * hd + d] * inv[i];
    }
  });
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& pool, const std::optional<at::Tensor>& staged,
                                  const at::Tensor& tables, const at::Tensor& context_lens, double scale,
                                  int64_t window) {
  check_pool(pool, "pool");
  TORCH_CHECK(q.dim() == 3 && q.size(2) == pool.size(4), "q must be [B, heads, head_dim=", pool.size(4), "], got ",
              q.sizes());
  const int64_t B = q.size(0), nh = q.size(1), kvh = pool.size(3), bs = pool.size(2);
  TORCH_CHECK(nh % kvh == 0, "query heads (", nh, ") must be a multiple of kv heads (", kvh, ")");
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == B && tables.scalar_type() == at::kLong,
              "tables must be int64 [B=", B, ", blocks], got ", tables.sizes());
  TORCH_CHECK(context_lens.numel() == B && context_lens.scalar_type() == at::kLong, "context_lens must be int64 [B=", B, "]");
  const bool has_staged = staged.has_value() && staged->numel() > 0;
  if (has_staged) {
    check_pool(*staged, "staged");
    TORCH_CHECK(staged->scalar_type() == pool.scalar_type() && staged->sizes().slice(1) == pool.sizes().slice(1),
                "staged must match the pool's block shape and dtype");
  }
  auto tab = tables.contiguous(), ctx = context_lens.contiguous();
  const int64_t nb = tab.size(1), G = pool.size(0), S = has_staged ? staged->size(0) : 0;
  const int64_t* tp = tab.data_ptr<int64_t>();
  const int64_t* cp = ctx.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {          // every entry the kernel will read, checked before it runs
    TORCH_CHECK(cp[b] >= 0 && cp[b] <= nb * bs, "context_lens[", b, "]=", cp[b], " is outside [0, ", nb * bs, "]");
    const int64_t first = window > 0 ? std::max<int64_t>(0, cp[b] - window) : 0;
    for (int64_t i = first / bs; i * bs < cp[b]; ++i) {
      const int64_t v = tp[b * nb + i];
      TORCH_CHECK(v >= 0 ? v < G : ~v < S, "tables[", b, ", ", i, "]=", v, " reads outside pool [0, ", G,
                  ") and staged [0, ", S, ")");
    }
  }
  auto qf = q.to(at::kFloat).contiguous();
  auto out = at::empty({B, nh, q.size(2)}, q.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, pool.scalar_type(), "paged_decode_attention", [&] {
    decode_kernel<scalar_t>(qf.data_ptr<float>(), pool.data_ptr<scalar_t>(),
                            has_staged ? staged->data_ptr<scalar_t>() : nullptr, tp, cp, out.data_ptr<float>(),
                            B, nh, kvh, q.size(2), bs, nb, window, static_cast<float>(scale));
  });
  return out.to(q.scalar_type());
}

}  // namespace
}  // namespace pie_lab

TORCH_LIBRARY_IMPL(pie_lab, CPU, m) { m.impl("paged_decode_attention", &pie_lab::paged_decode_attention); }
