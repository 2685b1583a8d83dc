// jopt's CPU kernels (XLA FFI handlers), for jopt.step: fused in-place optimizer
// steps (SGD with heavy-ball or Nesterov momentum, RMSprop (centered or not) with or
// without momentum, Adagrad, Adadelta, Adam, AdamW, NAdam, NAdamW, AMSGrad in optax's
// and torch's forms) over any number of float32 leaves, with state in float32 or
// (momentum, Adam, AdamW, NAdam, NAdamW) bfloat16, the torch door's coupled weight decay
// folded into the gradient, and a sum of squares over any number of float32 leaves (the
// global norm a clip needs).
//
// They take the leaves where they lie, as separate buffers, so that a model of 1000
// small leaves costs a few kernel calls instead of a copy into a packed buffer and
// 1000 slices out of it. The work is one virtual range over all the leaves, split into
// blocks shared out over XLA's intra-op thread pool.
//
// A step is one pass: Adam reads g, p, m, v and writes p, m, v (28 bytes per
// parameter, the floor), where XLA's loop for the same update reaches about 60% of
// the memory bandwidth on a 2-core machine. The arithmetic is jopt's (and optax's),
// operation for operation and in the same order. XLA's CPU compiler contracts a
// multiply feeding an add into a fused multiply-add (the product on the left of the
// add); the kernels spell out the same std::fma calls and are built with
// -ffp-contract=off, so that they round where XLA's loop rounds (each rule is written
// out above its struct below). g' = g * grad_scale is a clip_by_global_norm folded in.
//
// The state of leaf i lives in state buffer owner[i] at element offset[i] (jopt.fuse
// packs the state of small leaves into shared buffers); the caller checks that the
// pieces tile each state buffer, the kernel checks that each lies inside it.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
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

inline float AsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t AsBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// How a state array is stored. The arithmetic is float32 either way: a bfloat16
// element is widened exactly, and a result is rounded once as jopt.tree.cast rounds
// it: to nearest even, a finite value beyond bfloat16's range saturating to its
// largest finite value, NaN staying NaN (quieted), infinities staying infinite.
struct F32 {
  using T = float;
  static constexpr ffi::DataType kType = ffi::DataType::F32;
  static float Load(const T* x, int64_t i) { return x[i]; }
  static void Store(T* x, int64_t i, float v) { x[i] = v; }
};
struct BF16 {
  using T = uint16_t;
  static constexpr ffi::DataType kType = ffi::DataType::BF16;
  static float Load(const T* x, int64_t i) { return AsFloat(static_cast<uint32_t>(x[i]) << 16); }
  static void Store(T* x, int64_t i, float v) {
    const uint32_t u = AsBits(v), magnitude = u & 0x7FFFFFFFu;
    const uint32_t nearest_even = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // inf stays inf
    const uint32_t overflow = magnitude < 0x7F800000u && (nearest_even & 0x7FFFu) == 0x7F80u;
    const uint32_t out = magnitude > 0x7F800000u ? (u >> 16) | 0x40u : nearest_even - overflow;
    x[i] = static_cast<uint16_t>(out);
  }
};

// One leaf's buffers: parameters and gradients, and its piece of each state buffer
// (typed by the rule that reads it).
constexpr int kMaxStates = 3;
struct Leaf {
  const float* p;
  const float* g;
  float* p_out;
  const void* s[kMaxStates];
  void* s_out[kMaxStates];
};

// XLA's maximum: NaN if either operand is NaN (a NaN first operand is returned as is).
inline float MaxNaN(float a, float b) { return (a > b || a != a) ? a : b; }

// The update rules. Each takes its coefficients (one float32 vector, in the order of
// its fields) and runs its loop over elements [a, b) of a leaf. The fma calls are
// where XLA contracts the same expressions in jopt's update + apply_updates.

// The gradient a rule sees: g' = g * grad_scale (a folded clip; its sign is torch's
// maximize), then with kL2 torch's coupled weight decay g' = fma(l2, p, g'), as XLA
// contracts add_decayed_weights. Its coefficients come first: grad_scale [, l2].
template <bool kL2>
struct GradIn {
  static constexpr int kCoefs = kL2 ? 2 : 1;
  float gs, l2;
  explicit GradIn(const float* k) : gs(k[0]), l2(kL2 ? k[1] : 0.0f) {}
  float operator()(const float* __restrict G, const float* __restrict P, int64_t i) const {
    const float g = G[i] * gs;
    return kL2 ? std::fma(l2, P[i], g) : g;
  }
};
using Plain = GradIn<false>;
using L2 = GradIn<true>;

// Heavy-ball momentum (optax's trace; torch's SGD buffer, c = 1 - dampening after
// its first step): m = fma(d, m, g' c), p = fma(m, -lr, p); with kNesterov the step
// is u = fma(d, m, g') instead of m: p = fma(u, -lr, p).
template <typename In, typename SM, bool kNesterov>
struct Momentum {
  static constexpr int kStates = 1, kCoefs = In::kCoefs + 3;
  static constexpr ffi::DataType kStateTypes[kStates] = {SM::kType};
  In in;
  float d, c, neg_lr;
  explicit Momentum(const float* k)
      : in(k), d(k[In::kCoefs]), c(k[In::kCoefs + 1]), neg_lr(k[In::kCoefs + 2]) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const typename SM::T* __restrict M = static_cast<const typename SM::T*>(L.s[0]);
    float* __restrict PO = L.p_out;
    typename SM::T* __restrict MO = static_cast<typename SM::T*>(L.s_out[0]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float mi = std::fma(d, SM::Load(M, i), gi * c);
      SM::Store(MO, i, mi);
      PO[i] = std::fma(kNesterov ? std::fma(d, mi, gi) : mi, neg_lr, P[i]);
    }
  }
};

// RMSprop's second moment and the value under the root. v = fma(c, g'^2, d v); with
// kCentered (scale_by_stddev: centered RMSprop) also m = fma(c, g', d m) and the root
// takes the variance fma(-m, m, v), where XLA contracts v - m^2. The state arrays are
// m, v (kCentered) or v, then any others the rule keeps.
template <bool kCentered>
struct SecondMoment {
  static constexpr int kStates = kCentered ? 2 : 1;
  float d, c;
  // Updates the state of element i, writes it out, and returns what goes under the root.
  float operator()(const Leaf& L, int64_t i, float g) const {
    const float* __restrict V = static_cast<const float*>(L.s[kStates - 1]);
    float* __restrict VO = static_cast<float*>(L.s_out[kStates - 1]);
    const float v = std::fma(c, g * g, d * V[i]);
    VO[i] = v;
    if (!kCentered) return v;
    const float* __restrict M = static_cast<const float*>(L.s[0]);
    float* __restrict MO = static_cast<float*>(L.s_out[0]);
    const float m = std::fma(c, g, d * M[i]);
    MO[i] = m;
    return std::fma(-m, m, v);
  }
};

// RMSprop (optax's scale_by_rms, or scale_by_stddev with kCentered): s the value under
// the root (SecondMoment); u = g' / sqrt(s + eps) (kEpsInSqrt, optax's rsqrt) or
// g' / (sqrt(s) + eps); p = fma(u, -lr, p).
template <typename In, bool kEpsInSqrt, bool kCentered = false>
struct RmsProp {
  using Second = SecondMoment<kCentered>;
  static constexpr int kStates = Second::kStates, kCoefs = In::kCoefs + 4;
  static constexpr ffi::DataType kStateTypes[2] = {ffi::DataType::F32, ffi::DataType::F32};
  In in;
  Second second;
  float eps, neg_lr;
  explicit RmsProp(const float* k)
      : in(k), second{k[In::kCoefs], k[In::kCoefs + 1]}, eps(k[In::kCoefs + 2]),
        neg_lr(k[In::kCoefs + 3]) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    float* __restrict PO = L.p_out;
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float si = second(L, i, gi);
      const float u = kEpsInSqrt ? (1.0f / std::sqrt(si + eps)) * gi : gi / (std::sqrt(si) + eps);
      PO[i] = std::fma(u, neg_lr, P[i]);
    }
  }
};

// RMSprop with momentum b (the last state, optax's trace). kLrInside (optax's rmsprop,
// eps inside the root): u = -lr g' / sqrt(s + eps), b = fma(mu, b, u), p = p + b, or
// with kNesterov p = p + fma(mu, b, u). Otherwise (torch's RMSprop, eps outside):
// b = fma(mu, b, g' / (sqrt(s) + eps)), p = fma(b, -lr, p). s as in RmsProp.
template <typename In, bool kLrInside, bool kNesterov, bool kCentered = false>
struct RmsPropMomentum {
  using Second = SecondMoment<kCentered>;
  static constexpr int kStates = Second::kStates + 1, kCoefs = In::kCoefs + 5;
  static constexpr ffi::DataType kStateTypes[3] = {ffi::DataType::F32, ffi::DataType::F32,
                                                   ffi::DataType::F32};
  In in;
  Second second;
  float eps, mu, neg_lr;
  explicit RmsPropMomentum(const float* k)
      : in(k), second{k[In::kCoefs], k[In::kCoefs + 1]}, eps(k[In::kCoefs + 2]),
        mu(k[In::kCoefs + 3]), neg_lr(k[In::kCoefs + 4]) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    constexpr int kTrace = Second::kStates;
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const float* __restrict B = static_cast<const float*>(L.s[kTrace]);
    float* __restrict PO = L.p_out;
    float* __restrict BO = static_cast<float*>(L.s_out[kTrace]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float si = second(L, i, gi);
      if (kLrInside) {
        const float u = ((1.0f / std::sqrt(si + eps)) * gi) * neg_lr;
        const float bi = std::fma(mu, B[i], u);
        BO[i] = bi;
        PO[i] = P[i] + (kNesterov ? std::fma(mu, bi, u) : bi);
      } else {
        const float bi = std::fma(mu, B[i], gi / (std::sqrt(si) + eps));
        BO[i] = bi;
        PO[i] = std::fma(bi, neg_lr, P[i]);
      }
    }
  }
};

// Adadelta (scale_by_adadelta, optax's and torch's): e_g = fma(c, g'^2, d e_g);
// u = sqrt(e_x + eps) / sqrt(e_g + eps) * g'; e_x = fma(c, u^2, d e_x); p = fma(u, -lr, p).
template <typename In>
struct Adadelta {
  static constexpr int kStates = 2, kCoefs = In::kCoefs + 4;
  static constexpr ffi::DataType kStateTypes[kStates] = {ffi::DataType::F32, ffi::DataType::F32};
  In in;
  float d, c, eps, neg_lr;
  explicit Adadelta(const float* k)
      : in(k), d(k[In::kCoefs]), c(k[In::kCoefs + 1]), eps(k[In::kCoefs + 2]),
        neg_lr(k[In::kCoefs + 3]) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const float* __restrict EG = static_cast<const float*>(L.s[0]);
    const float* __restrict EX = static_cast<const float*>(L.s[1]);
    float* __restrict PO = L.p_out;
    float* __restrict EGO = static_cast<float*>(L.s_out[0]);
    float* __restrict EXO = static_cast<float*>(L.s_out[1]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float egi = std::fma(c, gi * gi, d * EG[i]);
      const float exi = EX[i];
      const float u = std::sqrt(exi + eps) / std::sqrt(egi + eps) * gi;
      EGO[i] = egi;
      EXO[i] = std::fma(c, u * u, d * exi);
      PO[i] = std::fma(u, neg_lr, P[i]);
    }
  }
};

// Adagrad (optax's scale_by_rss): s = fma(g', g', s); u = g' / sqrt(s + eps), 0 where
// s is 0 (kEpsInSqrt, optax's) or u = g' / (sqrt(s) + eps) (torch's); p = fma(u, -lr, p).
template <typename In, bool kEpsInSqrt>
struct Adagrad {
  static constexpr int kStates = 1, kCoefs = In::kCoefs + 2;
  static constexpr ffi::DataType kStateTypes[kStates] = {ffi::DataType::F32};
  In in;
  float eps, neg_lr;
  explicit Adagrad(const float* c) : in(c), eps(c[In::kCoefs]), neg_lr(c[In::kCoefs + 1]) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const float* __restrict S = static_cast<const float*>(L.s[0]);
    float* __restrict PO = L.p_out;
    float* __restrict SO = static_cast<float*>(L.s_out[0]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float si = std::fma(gi, gi, S[i]);
      float u;
      if (kEpsInSqrt) {
        // scale = si > 0 ? 1 / sqrt(si + eps) : 0, as a bit mask: GCC does not
        // vectorize the select (the loop ran 1.7x slower than XLA's)
        const float root = 1.0f / std::sqrt(si + eps);
        u = AsFloat(AsBits(root) & (0u - static_cast<uint32_t>(si > 0.0f))) * gi;
      } else {
        u = gi / (std::sqrt(si) + eps);
      }
      SO[i] = si;
      PO[i] = std::fma(u, neg_lr, P[i]);
    }
  }
};

// Adam(W): m = fma(c1, g', d1 m), v = fma(c2, g'^2, d2 v),
// u = (m / bc1) / (sqrt(v / bc2 + eps_root) + eps) [u = fma(wd, p, u)], p = fma(u, -lr, p).
// NAdam(W) (kNesterov) has m / bc1 as (d1 m) / bc1_next + (c1 g') / bc1, where bc1_next
// is 1 - b1^(t+1), its coefficient after the others.
// The ten scalars of an Adam-family step, in the order of its coefficients after the
// gradient's (jopt.kernels.rules._ADAM_COEFFICIENTS).
struct AdamScalars {
  static constexpr int kCount = 10;
  float d1, c1, d2, c2, bc1, bc2, eps_root, eps, wd, neg_lr;
  explicit AdamScalars(const float* c)
      : d1(c[0]), c1(c[1]), d2(c[2]), c2(c[3]), bc1(c[4]), bc2(c[5]), eps_root(c[6]),
        eps(c[7]), wd(c[8]), neg_lr(c[9]) {}
};

template <typename In, bool kDecoupledDecay, typename SM, typename SV, bool kNesterov = false>
struct Adam : AdamScalars {
  static constexpr int kStates = 2,
                       kCoefs = In::kCoefs + AdamScalars::kCount + (kNesterov ? 1 : 0);
  static constexpr ffi::DataType kStateTypes[kStates] = {SM::kType, SV::kType};
  In in;
  float bc1_next;
  explicit Adam(const float* k)
      : AdamScalars(k + In::kCoefs),
        in(k),
        bc1_next(kNesterov ? k[In::kCoefs + AdamScalars::kCount] : 1.0f) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const typename SM::T* __restrict M = static_cast<const typename SM::T*>(L.s[0]);
    const typename SV::T* __restrict V = static_cast<const typename SV::T*>(L.s[1]);
    float* __restrict PO = L.p_out;
    typename SM::T* __restrict MO = static_cast<typename SM::T*>(L.s_out[0]);
    typename SV::T* __restrict VO = static_cast<typename SV::T*>(L.s_out[1]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float mi = std::fma(c1, gi, d1 * SM::Load(M, i));
      const float vi = std::fma(c2, gi * gi, d2 * SV::Load(V, i));
      const float m_hat = kNesterov ? (d1 * mi) / bc1_next + (c1 * gi) / bc1 : mi / bc1;
      float u = m_hat / (std::sqrt(vi / bc2 + eps_root) + eps);
      const float pi = P[i];
      if (kDecoupledDecay) u = std::fma(wd, pi, u);
      SM::Store(MO, i, mi);
      SV::Store(VO, i, vi);
      PO[i] = std::fma(u, neg_lr, pi);
    }
  }
};

// AMSGrad: Adam's m and v, then a running maximum n of the second moment. Torch's form
// (jopt.scale_by_amsgrad with max_before_bias_correction) keeps the raw one, n = max(n,
// v), u = (m / bc1) / (sqrt(n / bc2 + eps_root) + eps); optax's (kMaxAfterCorrection)
// the corrected one, n = max(n, v / bc2), u = (m / bc1) / (sqrt(n + eps_root) + eps).
// Then [u = fma(wd, p, u)], p = fma(u, -lr, p). Its coefficients are Adam's.
template <typename In, bool kDecoupledDecay, bool kMaxAfterCorrection = false>
struct AmsGrad : AdamScalars {
  static constexpr int kStates = 3, kCoefs = In::kCoefs + AdamScalars::kCount;
  static constexpr ffi::DataType kStateTypes[kStates] = {ffi::DataType::F32, ffi::DataType::F32,
                                                         ffi::DataType::F32};
  In in;
  explicit AmsGrad(const float* k) : AdamScalars(k + In::kCoefs), in(k) {}
  void operator()(const Leaf& L, int64_t a, int64_t b) const {
    const float* __restrict P = L.p;
    const float* __restrict G = L.g;
    const float* __restrict M = static_cast<const float*>(L.s[0]);
    const float* __restrict V = static_cast<const float*>(L.s[1]);
    const float* __restrict N = static_cast<const float*>(L.s[2]);
    float* __restrict PO = L.p_out;
    float* __restrict MO = static_cast<float*>(L.s_out[0]);
    float* __restrict VO = static_cast<float*>(L.s_out[1]);
    float* __restrict NO = static_cast<float*>(L.s_out[2]);
#pragma GCC ivdep
    for (int64_t i = a; i < b; ++i) {
      const float gi = in(G, P, i);
      const float mi = std::fma(c1, gi, d1 * M[i]);
      const float vi = std::fma(c2, gi * gi, d2 * V[i]);
      const float ni = MaxNaN(N[i], kMaxAfterCorrection ? vi / bc2 : vi);
      const float n_hat = kMaxAfterCorrection ? ni : ni / bc2;
      float u = (mi / bc1) / (std::sqrt(n_hat + eps_root) + eps);
      const float pi = P[i];
      if (kDecoupledDecay) u = std::fma(wd, pi, u);
      MO[i] = mi;
      VO[i] = vi;
      NO[i] = ni;
      PO[i] = std::fma(u, neg_lr, pi);
    }
  }
};

// Arguments: coefficients, p[0..n), g[0..n), then for each state s: s[0..k); results:
// p[0..n), then each state's [0..k), each aliased to its input by the caller. The
// state of leaf i is in buffer owner[i] of each state, from element offset[i].
template <typename Op>
ffi::Error Step(ffi::ThreadPool pool, ffi::Span<const int64_t> owner,
                ffi::Span<const int64_t> offset, ffi::RemainingArgs args,
                ffi::RemainingRets rets) {
  constexpr int64_t S = Op::kStates;
  const int64_t n = static_cast<int64_t>(owner.size());
  const int64_t rest = static_cast<int64_t>(args.size()) - 1 - 2 * n;
  const int64_t k = rest / S;
  if (static_cast<int64_t>(offset.size()) != n || n < 1 || k < 1 || rest != S * k ||
      static_cast<int64_t>(rets.size()) != n + S * k) {
    return ffi::Error::InvalidArgument("jopt step kernel: wrong number of buffers");
  }
  auto coefs = args.get<ffi::Buffer<ffi::F32>>(0);
  if (!coefs.has_value() || coefs->element_count() != Op::kCoefs) {
    return ffi::Error::InvalidArgument("jopt step kernel: wrong coefficients");
  }
  std::vector<const void*> state_in(S * k);
  std::vector<void*> state_out(S * k);
  static_assert(S >= 1 && S <= kMaxStates, "a step kernel keeps 1 to kMaxStates states");
  std::vector<int64_t> state_size(k, 0);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = 0; j < k; ++j) {
      auto in = args.get<ffi::AnyBuffer>(1 + 2 * n + s * k + j);
      auto out = rets.get<ffi::AnyBuffer>(n + s * k + j);
      if (!in.has_value() || !out.has_value() || in->element_type() != Op::kStateTypes[s] ||
          (*out)->element_type() != Op::kStateTypes[s]) {
        return ffi::Error::InvalidArgument("jopt step kernel: a state has the wrong dtype");
      }
      if (s == 0) state_size[j] = in->element_count();
      if (in->element_count() != state_size[j]) {
        return ffi::Error::InvalidArgument("jopt step kernel: state buffers differ in size");
      }
      state_in[s * k + j] = in->untyped_data();
      state_out[s * k + j] = (*out)->untyped_data();
    }
  }
  std::vector<Leaf> leaves(n);
  std::vector<int64_t> sizes(n);
  for (int64_t i = 0; i < n; ++i) {
    auto p = args.get<ffi::Buffer<ffi::F32>>(1 + i);
    auto g = args.get<ffi::Buffer<ffi::F32>>(1 + n + i);
    auto po = rets.get<ffi::Buffer<ffi::F32>>(i);
    if (!p.has_value() || !g.has_value() || !po.has_value()) {
      return ffi::Error::InvalidArgument("jopt step kernel: p and g must be float32");
    }
    const int64_t size = p->element_count(), j = owner[i], at = offset[i];
    if (g->element_count() != size || j < 0 || j >= k || at < 0 ||
        at + size > state_size[j]) {
      return ffi::Error::InvalidArgument("jopt step kernel: a leaf does not fit its state");
    }
    sizes[i] = size;
    Leaf& L = leaves[i];
    L = {p->typed_data(), g->typed_data(), (*po)->typed_data(), {}, {}};
    for (int64_t s = 0; s < S; ++s) {
      const int64_t bytes = at * static_cast<int64_t>(ffi::ByteWidth(Op::kStateTypes[s]));
      L.s[s] = static_cast<const char*>(state_in[s * k + j]) + bytes;
      L.s_out[s] = static_cast<char*>(state_out[s * k + j]) + bytes;
    }
  }
  const Op op(coefs->typed_data());
  const std::vector<int64_t> start = Starts(sizes);
  ParallelFor(pool, start.back(), [&](int64_t lo, int64_t hi, int64_t) {
    ForLeaves(start, lo, hi, [&](int64_t leaf, int64_t a, int64_t b) { op(leaves[leaf], a, b); });
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

#define JOPT_STEP_BINDING                          \
  ffi::Ffi::Bind()                                 \
      .Ctx<ffi::ThreadPool>()                      \
      .Attr<ffi::Span<const int64_t>>("owner")     \
      .Attr<ffi::Span<const int64_t>>("offset")    \
      .RemainingArgs()                             \
      .RemainingRets()

// One symbol per rule and storage of its states, named as its XLA target
// (jopt.kernels.rules.StepKernel.targets): the rule, then each state's dtype.
#define JOPT_STEP(name, Op) XLA_FFI_DEFINE_HANDLER_SYMBOL(name, Step<Op>, JOPT_STEP_BINDING)

using MomentumF32 = Momentum<Plain, F32, false>;
using MomentumBf16 = Momentum<Plain, BF16, false>;
using NesterovF32 = Momentum<Plain, F32, true>;
using NesterovBf16 = Momentum<Plain, BF16, true>;
using AdamF32F32 = Adam<Plain, false, F32, F32>;
using AdamF32Bf16 = Adam<Plain, false, F32, BF16>;
using AdamBf16F32 = Adam<Plain, false, BF16, F32>;
using AdamBf16Bf16 = Adam<Plain, false, BF16, BF16>;
using AdamWF32F32 = Adam<Plain, true, F32, F32>;
using AdamWF32Bf16 = Adam<Plain, true, F32, BF16>;
using AdamWBf16F32 = Adam<Plain, true, BF16, F32>;
using AdamWBf16Bf16 = Adam<Plain, true, BF16, BF16>;
using NAdamF32F32 = Adam<Plain, false, F32, F32, true>;
using NAdamF32Bf16 = Adam<Plain, false, F32, BF16, true>;
using NAdamBf16F32 = Adam<Plain, false, BF16, F32, true>;
using NAdamBf16Bf16 = Adam<Plain, false, BF16, BF16, true>;
using NAdamWF32F32 = Adam<Plain, true, F32, F32, true>;
using NAdamWF32Bf16 = Adam<Plain, true, F32, BF16, true>;
using NAdamWBf16F32 = Adam<Plain, true, BF16, F32, true>;
using NAdamWBf16Bf16 = Adam<Plain, true, BF16, BF16, true>;
using RmsPropF32 = RmsProp<Plain, true>;
using RmsPropEpsOutsideF32 = RmsProp<Plain, false>;
using RmsPropMomentumF32 = RmsPropMomentum<Plain, true, false>;
using RmsPropMomentumNesterovF32 = RmsPropMomentum<Plain, true, true>;
using TorchRmsPropMomentumF32 = RmsPropMomentum<Plain, false, false>;
using RmsPropCenteredF32F32 = RmsProp<Plain, true, true>;
using RmsPropCenteredEpsOutsideF32F32 = RmsProp<Plain, false, true>;
using RmsPropCenteredMomentumF32 = RmsPropMomentum<Plain, true, false, true>;
using RmsPropCenteredMomentumNesterovF32 = RmsPropMomentum<Plain, true, true, true>;
using TorchRmsPropCenteredMomentumF32 = RmsPropMomentum<Plain, false, false, true>;
using AdagradF32 = Adagrad<Plain, true>;
using AdagradEpsOutsideF32 = Adagrad<Plain, false>;
using AdadeltaF32F32 = Adadelta<Plain>;

JOPT_STEP(jopt_momentum_step_f32, MomentumF32);
JOPT_STEP(jopt_momentum_step_bf16, MomentumBf16);
JOPT_STEP(jopt_momentum_nesterov_step_f32, NesterovF32);
JOPT_STEP(jopt_momentum_nesterov_step_bf16, NesterovBf16);
JOPT_STEP(jopt_rmsprop_step_f32, RmsPropF32);
JOPT_STEP(jopt_rmsprop_eps_outside_step_f32, RmsPropEpsOutsideF32);
JOPT_STEP(jopt_rmsprop_momentum_step_f32_f32, RmsPropMomentumF32);
JOPT_STEP(jopt_rmsprop_momentum_nesterov_step_f32_f32, RmsPropMomentumNesterovF32);
JOPT_STEP(jopt_torch_rmsprop_momentum_step_f32_f32, TorchRmsPropMomentumF32);
JOPT_STEP(jopt_rmsprop_centered_step_f32_f32, RmsPropCenteredF32F32);
JOPT_STEP(jopt_rmsprop_centered_eps_outside_step_f32_f32, RmsPropCenteredEpsOutsideF32F32);
JOPT_STEP(jopt_rmsprop_centered_momentum_step_f32_f32_f32, RmsPropCenteredMomentumF32);
JOPT_STEP(jopt_rmsprop_centered_momentum_nesterov_step_f32_f32_f32,
          RmsPropCenteredMomentumNesterovF32);
JOPT_STEP(jopt_torch_rmsprop_centered_momentum_step_f32_f32_f32, TorchRmsPropCenteredMomentumF32);
JOPT_STEP(jopt_adagrad_step_f32, AdagradF32);
JOPT_STEP(jopt_adagrad_eps_outside_step_f32, AdagradEpsOutsideF32);
JOPT_STEP(jopt_adadelta_step_f32_f32, AdadeltaF32F32);
JOPT_STEP(jopt_adam_step_f32_f32, AdamF32F32);
JOPT_STEP(jopt_adam_step_f32_bf16, AdamF32Bf16);
JOPT_STEP(jopt_adam_step_bf16_f32, AdamBf16F32);
JOPT_STEP(jopt_adam_step_bf16_bf16, AdamBf16Bf16);
JOPT_STEP(jopt_adamw_step_f32_f32, AdamWF32F32);
JOPT_STEP(jopt_adamw_step_f32_bf16, AdamWF32Bf16);
JOPT_STEP(jopt_adamw_step_bf16_f32, AdamWBf16F32);
JOPT_STEP(jopt_adamw_step_bf16_bf16, AdamWBf16Bf16);
JOPT_STEP(jopt_nadam_step_f32_f32, NAdamF32F32);
JOPT_STEP(jopt_nadam_step_f32_bf16, NAdamF32Bf16);
JOPT_STEP(jopt_nadam_step_bf16_f32, NAdamBf16F32);
JOPT_STEP(jopt_nadam_step_bf16_bf16, NAdamBf16Bf16);
JOPT_STEP(jopt_nadamw_step_f32_f32, NAdamWF32F32);
JOPT_STEP(jopt_nadamw_step_f32_bf16, NAdamWF32Bf16);
JOPT_STEP(jopt_nadamw_step_bf16_f32, NAdamWBf16F32);
JOPT_STEP(jopt_nadamw_step_bf16_bf16, NAdamWBf16Bf16);

// AMSGrad as torch keeps it, for the torch door's Adam and AdamW with amsgrad=True, and
// as optax keeps it, for jopt.amsgrad.
using AmsGradRawF32 = AmsGrad<Plain, false>;
using AmsGradWRawF32 = AmsGrad<Plain, true>;
using AmsGradF32 = AmsGrad<Plain, false, true>;
JOPT_STEP(jopt_amsgrad_step_f32_f32_f32, AmsGradF32);
JOPT_STEP(jopt_amsgrad_raw_step_f32_f32_f32, AmsGradRawF32);
JOPT_STEP(jopt_amsgradw_raw_step_f32_f32_f32, AmsGradWRawF32);

// The rules after weight decay added to the gradient (weight_decay in torch.optim's SGD,
// Adam, RMSprop, Adagrad, Adadelta; optax's adadelta decays the same way): float32 state
// only, as the torch door keeps it.
using MomentumL2F32 = Momentum<L2, F32, false>;
using NesterovL2F32 = Momentum<L2, F32, true>;
using AdamL2F32F32 = Adam<L2, false, F32, F32>;
using RmsPropEpsOutsideL2F32 = RmsProp<L2, false>;
using AdagradEpsOutsideL2F32 = Adagrad<L2, false>;
using AdadeltaL2F32F32 = Adadelta<L2>;
using TorchRmsPropMomentumL2F32 = RmsPropMomentum<L2, false, false>;
using RmsPropCenteredEpsOutsideL2F32F32 = RmsProp<L2, false, true>;
using TorchRmsPropCenteredMomentumL2F32 = RmsPropMomentum<L2, false, false, true>;

JOPT_STEP(jopt_momentum_l2_step_f32, MomentumL2F32);
JOPT_STEP(jopt_momentum_nesterov_l2_step_f32, NesterovL2F32);
JOPT_STEP(jopt_rmsprop_eps_outside_l2_step_f32, RmsPropEpsOutsideL2F32);
JOPT_STEP(jopt_adagrad_eps_outside_l2_step_f32, AdagradEpsOutsideL2F32);
JOPT_STEP(jopt_adadelta_l2_step_f32_f32, AdadeltaL2F32F32);
JOPT_STEP(jopt_torch_rmsprop_momentum_l2_step_f32_f32, TorchRmsPropMomentumL2F32);
JOPT_STEP(jopt_rmsprop_centered_eps_outside_l2_step_f32_f32, RmsPropCenteredEpsOutsideL2F32F32);
JOPT_STEP(jopt_torch_rmsprop_centered_momentum_l2_step_f32_f32_f32,
          TorchRmsPropCenteredMomentumL2F32);
JOPT_STEP(jopt_adam_l2_step_f32_f32, AdamL2F32F32);
using AmsGradRawL2F32 = AmsGrad<L2, false>;
JOPT_STEP(jopt_amsgrad_raw_l2_step_f32_f32_f32, AmsGradRawL2F32);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jopt_sum_squares_f32, SumSquares,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jopt_after_all, AfterAll,
                              ffi::Ffi::Bind().RemainingArgs().Ret<ffi::Buffer<ffi::F32>>());
