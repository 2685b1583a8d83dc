// jopt's CPU kernels (XLA FFI handlers), for jopt.step: a fused in-place Adam/AdamW
// step over any number of float32 leaves, and a sum of squares over any number of
// float32 leaves (the global norm a clip needs).
//
// Both take the leaves where they lie, as separate buffers, so that a model of 1000
// small leaves costs one kernel call (and one kernel for XLA to compile) instead of a
// copy into a packed buffer and 1000 slices out of it. The work is one virtual range
// over all the leaves, split into blocks shared out over XLA's intra-op thread pool.
//
// Adam: one pass reads g, p, m, v and writes p, m, v (28 bytes per parameter, the
// floor), where XLA's loop for the same update reaches about 60% of the memory
// bandwidth on a 2-core machine. The arithmetic is jopt's (and optax's) Adam,
// operation for operation and in the same order. XLA's CPU compiler contracts a
// multiply feeding an add into a fused multiply-add (the product on the left of the
// add); the kernel spells out the same std::fma calls and is built with
// -ffp-contract=off, so that it rounds where XLA's loop rounds:
//
//   g' = g * grad_scale                       (clip_by_global_norm folded in)
//   m  = fma(c1, g', d1 * m),   v = fma(c2, g'^2, d2 * v)
//   u  = (m / bc1) / (sqrt(v / bc2 + eps_root) + eps)
//   u  = fma(wd, p, u)                        (decoupled weight decay, AdamW only)
//   p  = fma(u, neg_lr, p)
//
// The moments of leaf i live in state buffer owner[i] at element offset[i] (jopt.fuse
// packs the state of small leaves into shared buffers); the caller checks that the
// pieces tile each state buffer, the kernel checks that each lies inside it.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 1 << 16;  // elements per work item (256 KiB per stream)

// Runs body(lo, hi, block) over [0, n) in blocks on the caller and the pool's threads.
// The caller takes blocks too, so the loop finishes even if no helper ever starts; it
// waits only for blocks that a helper has claimed. A helper that starts late finds no
// block left and returns without touching body's captures.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Body& body) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t threads = pool.num_threads();
  if (blocks <= 1 || threads <= 1) {
    for (int64_t b = 0; b < blocks; ++b) body(b * kBlock, std::min(n, (b + 1) * kBlock), b);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, n, blocks, body]() {
    for (;;) {
      const int64_t b = shared->next.fetch_add(1, std::memory_order_relaxed);
      if (b >= blocks) return;
      const int64_t lo = b * kBlock;
      body(lo, std::min(n, lo + kBlock), b);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min(threads, blocks) - 1;
  for (int64_t i = 0; i < helpers; ++i) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (shared->done.load(std::memory_order_acquire) < blocks) std::this_thread::yield();
}

// Calls f(leaf, lo, hi) for the parts of leaves that the virtual range [lo, hi) covers;
// start[i] is where leaf i begins in the range (start.back() is the total).
template <typename F>
void ForLeaves(const std::vector<int64_t>& start, int64_t lo, int64_t hi, const F& f) {
  int64_t leaf = std::upper_bound(start.begin(), start.end(), lo) - start.begin() - 1;
  for (; lo < hi; ++leaf) {
    const int64_t end = std::min(hi, start[leaf + 1]);
    if (end > lo) f(leaf, lo - start[leaf], end - start[leaf]);
    lo = end;
  }
}

std::vector<int64_t> Starts(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> start(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) start[i + 1] = start[i] + sizes[i];
  return start;
}

// Coefficients, in this order, as one float32 vector.
enum Coef { kGradScale, kD1, kC1, kD2, kC2, kBc1, kBc2, kEpsRoot, kEps, kWd, kNegLr, kNumCoefs };

struct AdamLeaf {
  const float* p;
  const float* g;
  const float* m;
  const float* v;
  float* p_out;
  float* m_out;
  float* v_out;
};

// Arguments: coefficients, p[0..n), g[0..n), m[0..k), v[0..k); results: p[0..n),
// m[0..k), v[0..k), each aliased to its input by the caller.
template <bool kDecoupledDecay>
ffi::Error AdamStep(ffi::ThreadPool pool, ffi::Span<const int64_t> owner,
                    ffi::Span<const int64_t> offset, ffi::RemainingArgs args,
                    ffi::RemainingRets rets) {
  const int64_t n = static_cast<int64_t>(owner.size());
  const int64_t k = (static_cast<int64_t>(args.size()) - 1 - 2 * n) / 2;
  if (static_cast<int64_t>(offset.size()) != n || n < 1 || k < 1 ||
      static_cast<int64_t>(args.size()) != 1 + 2 * n + 2 * k ||
      static_cast<int64_t>(rets.size()) != n + 2 * k) {
    return ffi::Error::InvalidArgument("jopt adam kernel: wrong number of buffers");
  }
  auto coefs = args.get<ffi::Buffer<ffi::F32>>(0);
  if (!coefs.has_value() || coefs->element_count() != kNumCoefs) {
    return ffi::Error::InvalidArgument("jopt adam kernel: coefficients must be 11 float32");
  }
  std::vector<const float*> m_in(k), v_in(k);
  std::vector<float*> m_out(k), v_out(k);
  std::vector<int64_t> state_size(k);
  for (int64_t j = 0; j < k; ++j) {
    auto m = args.get<ffi::Buffer<ffi::F32>>(1 + 2 * n + j);
    auto v = args.get<ffi::Buffer<ffi::F32>>(1 + 2 * n + k + j);
    auto mo = rets.get<ffi::Buffer<ffi::F32>>(n + j);
    auto vo = rets.get<ffi::Buffer<ffi::F32>>(n + k + j);
    if (!m.has_value() || !v.has_value() || !mo.has_value() || !vo.has_value()) {
      return ffi::Error::InvalidArgument("jopt adam kernel: moments must be float32");
    }
    state_size[j] = m->element_count();
    if (v->element_count() != state_size[j]) {
      return ffi::Error::InvalidArgument("jopt adam kernel: m and v differ in size");
    }
    m_in[j] = m->typed_data();
    v_in[j] = v->typed_data();
    m_out[j] = (*mo)->typed_data();
    v_out[j] = (*vo)->typed_data();
  }
  std::vector<AdamLeaf> leaves(n);
  std::vector<int64_t> sizes(n);
  for (int64_t i = 0; i < n; ++i) {
    auto p = args.get<ffi::Buffer<ffi::F32>>(1 + i);
    auto g = args.get<ffi::Buffer<ffi::F32>>(1 + n + i);
    auto po = rets.get<ffi::Buffer<ffi::F32>>(i);
    if (!p.has_value() || !g.has_value() || !po.has_value()) {
      return ffi::Error::InvalidArgument("jopt adam kernel: p and g must be float32");
    }
    const int64_t size = p->element_count(), j = owner[i], at = offset[i];
    if (g->element_count() != size || j < 0 || j >= k || at < 0 || at + size > state_size[j]) {
      return ffi::Error::InvalidArgument("jopt adam kernel: a leaf does not fit its state");
    }
    sizes[i] = size;
    leaves[i] = {p->typed_data(), g->typed_data(), m_in[j] + at,     v_in[j] + at,
                 (*po)->typed_data(), m_out[j] + at, v_out[j] + at};
  }
  const float* c = coefs->typed_data();
  const float gs = c[kGradScale], d1 = c[kD1], c1 = c[kC1], d2 = c[kD2], c2 = c[kC2];
  const float bc1 = c[kBc1], bc2 = c[kBc2], eps_root = c[kEpsRoot], eps = c[kEps];
  const float wd = c[kWd], neg_lr = c[kNegLr];
  const std::vector<int64_t> start = Starts(sizes);
  ParallelFor(pool, start.back(), [&](int64_t lo, int64_t hi, int64_t) {
    ForLeaves(start, lo, hi, [&](int64_t leaf, int64_t a, int64_t b) {
      const AdamLeaf& L = leaves[leaf];
      const float* __restrict P = L.p;
      const float* __restrict G = L.g;
      const float* __restrict M = L.m;
      const float* __restrict V = L.v;
      float* __restrict PO = L.p_out;
      float* __restrict MO = L.m_out;
      float* __restrict VO = L.v_out;
#pragma GCC ivdep
      for (int64_t i = a; i < b; ++i) {
        const float gi = G[i] * gs;
        const float mi = std::fma(c1, gi, d1 * M[i]);
        const float vi = std::fma(c2, gi * gi, d2 * V[i]);
        float u = (mi / bc1) / (std::sqrt(vi / bc2 + eps_root) + eps);
        const float pi = P[i];
        if (kDecoupledDecay) u = std::fma(wd, pi, u);
        MO[i] = mi;
        VO[i] = vi;
        PO[i] = std::fma(u, neg_lr, pi);
      }
    });
  });
  return ffi::Error::Success();
}

// The sum of the squares of all elements of all the float32 arguments, as float32.
// Each block sums in 16 float32 lanes, the lanes and blocks add up in float64, in
// block order: the result does not depend on how the threads shared the blocks.
ffi::Error SumSquares(ffi::ThreadPool pool, ffi::RemainingArgs args,
                      ffi::Result<ffi::Buffer<ffi::F32>> out) {
  const int64_t n = static_cast<int64_t>(args.size());
  std::vector<const float*> data(n);
  std::vector<int64_t> sizes(n);
  for (int64_t i = 0; i < n; ++i) {
    auto x = args.get<ffi::Buffer<ffi::F32>>(i);
    if (!x.has_value()) {
      return ffi::Error::InvalidArgument("jopt sum-of-squares kernel: leaves must be float32");
    }
    data[i] = x->typed_data();
    sizes[i] = x->element_count();
  }
  if (out->element_count() != 1) {
    return ffi::Error::InvalidArgument("jopt sum-of-squares kernel: the result is a scalar");
  }
  const std::vector<int64_t> start = Starts(sizes);
  const int64_t blocks = (start.back() + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  ParallelFor(pool, start.back(), [&](int64_t lo, int64_t hi, int64_t block) {
    double total = 0.0;
    ForLeaves(start, lo, hi, [&](int64_t leaf, int64_t a, int64_t b) {
      constexpr int kLanes = 16;
      float lane[kLanes] = {};
      const float* __restrict x = data[leaf] + a;
      const int64_t len = b - a, whole = len - len % kLanes;
      for (int64_t i = 0; i < whole; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) lane[l] += x[i + l] * x[i + l];
      }
      double sum = 0.0;
      for (int l = 0; l < kLanes; ++l) sum += lane[l];
      for (int64_t i = whole; i < len; ++i) sum += static_cast<double>(x[i]) * x[i];
      total += sum;
    });
    partial[block] = total;
  });
  double total = 0.0;
  for (double x : partial) total += x;
  out->typed_data()[0] = static_cast<float>(total);
  return ffi::Error::Success();
}

// A float32 zero that depends on every argument: XLA runs it after all of them are
// computed, and the kernels whose coefficients add it run after it (see
// jopt.kernels._after_all). It reads no data.
ffi::Error AfterAll(ffi::RemainingArgs, ffi::Result<ffi::Buffer<ffi::F32>> out) {
  if (out->element_count() != 1) {
    return ffi::Error::InvalidArgument("jopt after-all kernel: the result is a scalar");
  }
  out->typed_data()[0] = 0.0f;
  return ffi::Error::Success();
}

}  // namespace

#define JOPT_ADAM_BINDING                          \
  ffi::Ffi::Bind()                                 \
      .Ctx<ffi::ThreadPool>()                      \
      .Attr<ffi::Span<const int64_t>>("owner")     \
      .Attr<ffi::Span<const int64_t>>("offset")    \
      .RemainingArgs()                             \
      .RemainingRets()

XLA_FFI_DEFINE_HANDLER_SYMBOL(JoptAdamStepF32, AdamStep<false>, JOPT_ADAM_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JoptAdamWStepF32, AdamStep<true>, JOPT_ADAM_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JoptSumSquaresF32, SumSquares,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JoptAfterAll, AfterAll,
                              ffi::Ffi::Bind().RemainingArgs().Ret<ffi::Buffer<ffi::F32>>());
