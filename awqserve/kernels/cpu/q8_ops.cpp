// torch operators over q8gemv.c (`awqserve::q8_w4_mm`, `awqserve::q8_w8_mm`) and decode_attn.c
// (`awqserve::decode_attn`), CPU.
// Registered with the dispatcher so that eager code and inductor's compiled graphs call them at the
// cost of any ATen op (a few microseconds), with no Python in between.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

extern "C" {
int awq_w4_gemm(const float* x, int M, int K, int N, int G, const uint8_t* w4, const float* scale,
                const float* bias, float* out, int nthreads);
int awq_w8_gemm(const float* x, int M, int K, int N, const int8_t* w8, const float* rscale, float* out,
                int nthreads);
int awq_decode_attn(const float* q, const float* cache, long num_slots, const int64_t* slots, const uint8_t* mask,
                    int B, int L, int Hq, int Hkv, int D, float scale, float* out, int nthreads);
}

namespace {

at::Tensor float_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu(), "q8 ops take a 2-D CPU activation, got ", x.sizes());
  return x.to(at::kFloat).contiguous();
}

at::Tensor q8_w4_mm(const at::Tensor& x, const at::Tensor& w4, const at::Tensor& scale, const at::Tensor& bias,
                    int64_t group) {
  at::Tensor xf = float_rows(x);
  const int64_t m = xf.size(0), k = xf.size(1), n = w4.size(0);
  TORCH_CHECK(w4.scalar_type() == at::kByte && w4.is_contiguous() && w4.size(1) * 2 == k, "q8_w4_mm: bad w4");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat && scale.is_contiguous() &&
              bias.is_contiguous() && scale.numel() == n * (k / group) && bias.numel() == scale.numel(),
              "q8_w4_mm: bad scale/bias");
  at::Tensor out = at::empty({m, n}, xf.options());
  if (m > 0) {
    int rc = awq_w4_gemm(xf.data_ptr<float>(), m, k, n, group, w4.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                         bias.data_ptr<float>(), out.data_ptr<float>(), at::get_num_threads());
    TORCH_CHECK(rc == 0, "awq_w4_gemm failed (", rc, ")");
  }
  return out;
}

at::Tensor q8_w8_mm(const at::Tensor& x, const at::Tensor& w8, const at::Tensor& rscale) {
  at::Tensor xf = float_rows(x);
  const int64_t m = xf.size(0), k = xf.size(1), n = w8.size(0);
  TORCH_CHECK(w8.scalar_type() == at::kChar && w8.is_contiguous() && w8.size(1) == k, "q8_w8_mm: bad w8");
  TORCH_CHECK(rscale.scalar_type() == at::kFloat && rscale.numel() == n, "q8_w8_mm: bad rscale");
  at::Tensor out = at::empty({m, n}, xf.options());
  if (m > 0) {
    int rc = awq_w8_gemm(xf.data_ptr<float>(), m, k, n, w8.data_ptr<int8_t>(), rscale.data_ptr<float>(),
                         out.data_ptr<float>(), at::get_num_threads());
    TORCH_CHECK(rc == 0, "awq_w8_gemm failed (", rc, ")");
  }
  return out;
}

// q [B, Hq, D] float32; kv_cache [2, ..., Hkv, D] float32 contiguous (slots flattened); kv_slots [B, L]
// int64; kv_mask bool with B * L elements ([B, 1, 1, L]) or none.
at::Tensor decode_attn(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& kv_slots,
                       const std::optional<at::Tensor>& kv_mask, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kFloat && q.device().is_cpu(), "decode_attn: bad q");
  TORCH_CHECK(kv_cache.scalar_type() == at::kFloat && kv_cache.is_contiguous() && kv_cache.dim() >= 3,
              "decode_attn: kv_cache must be contiguous float32");
  TORCH_CHECK(kv_slots.dim() == 2 && kv_slots.scalar_type() == at::kLong && kv_slots.size(0) == q.size(0),
              "decode_attn: bad kv_slots");
  const int64_t b = q.size(0), hq = q.size(1), d = q.size(2), l = kv_slots.size(1);
  const int64_t hkv = kv_cache.size(-2);
  TORCH_CHECK(kv_cache.size(-1) == d, "decode_attn: head dims differ");
  const int64_t num_slots = kv_cache.numel() / (2 * hkv * d);
  at::Tensor qc = q.contiguous(), slots = kv_slots.contiguous();
  at::Tensor mask;
  if (kv_mask.has_value()) {
    TORCH_CHECK(kv_mask->scalar_type() == at::kBool && kv_mask->numel() == b * l, "decode_attn: bad kv_mask");
    mask = kv_mask->contiguous();
  }
  at::Tensor out = at::empty({b, hq, d}, qc.options());
  if (b > 0) {
    int rc = awq_decode_attn(qc.data_ptr<float>(), kv_cache.data_ptr<float>(), num_slots, slots.data_ptr<int64_t>(),
                             mask.defined() ? reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>()) : nullptr,
                             b, l, hq, hkv, d, static_cast<float>(scale), out.data_ptr<float>(),
                             at::get_num_threads());
    TORCH_CHECK(rc == 0, "awq_decode_attn failed (", rc, ")");
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(awqserve, m) {
  m.def("q8_w4_mm(Tensor x, Tensor w4, Tensor scale, Tensor bias, int group) -> Tensor");
  m.def("q8_w8_mm(Tensor x, Tensor w8, Tensor rscale) -> Tensor");
  m.def("decode_attn(Tensor q, Tensor kv_cache, Tensor kv_slots, Tensor? kv_mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(awqserve, CPU, m) {
  m.impl("q8_w4_mm", &q8_w4_mm);
  m.impl("q8_w8_mm", &q8_w8_mm);
  m.impl("decode_attn", &decode_attn);
}
