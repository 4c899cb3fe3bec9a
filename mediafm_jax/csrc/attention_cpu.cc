// Fused CPU attention with key-padding lengths, forward and backward, as XLA FFI custom
// calls (issue 24). XLA:CPU compiles the einsum-softmax-einsum into separate passes over a
// [B, N, T, S] score tensor; PyTorch's CPU flash kernel keeps one query block's scores in
// cache. This does the same: per (batch, head), per block of queries, the scores of all
// valid keys (a [QB, S] tile), the softmax and the product with V, then the next block.
// The backward recomputes the probabilities from the saved log-sum-exp instead of storing
// them (FlashAttention-2's recurrence). Work is split over (batch, head) pairs on XLA's
// intra-op thread pool.
//
// Layouts are the model's: q [B, T, N, D], k and v [B, S, N, D], lengths [B] int32;
// lse [B, N, T]. Semantics are jax.nn.dot_product_attention's with query_seq_lengths and
// key_value_seq_lengths: padded queries get a zero output and zero gradient. A row with no
// valid key gets a zero output (the reference averages the padding there).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kQueryBlock = 16;
constexpr int64_t kLane = 32;  // key columns are padded to a multiple of this (2 vectors)

// Runs body(i) for i in [0, n) on the caller and XLA's intra-op pool. Tasks that start
// after all work is claimed return at once, so the caller waits only for claimed work (and
// sleeps while it waits: on a busy machine a spinning caller takes a core from the helper).
template <typename Pool, typename Body>
void ParallelFor(Pool& pool, int64_t n, Body body) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable all_done;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, n, &body] {
    for (int64_t i; (i = shared->next.fetch_add(1)) < n;) {
      body(i);
      if (shared->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->all_done.notify_all();
      }
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) {
    // A helper may outlive this call if it starts late: it only touches `shared` then.
    pool.Schedule([shared, n, work_copy = work]() mutable {
      if (shared->next.load() >= n) return;
      work_copy();
    });
  }
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->all_done.wait(lock, [&] { return shared->done.load() >= n; });
}

// A 64-byte SIMD vector of T (GCC/Clang vector extensions: AVX-512 registers where the
// CPU has them, two AVX2 halves or four SSE quarters elsewhere).
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;  // (an attribute on an alias template is dropped)
template <typename T>
constexpr int64_t kWidth = 64 / sizeof(T);

template <typename T>
inline Vec<T> Load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void Store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
inline Vec<T> Splat(T x) {
  return Vec<T>{} + x;
}
static_assert(sizeof(Vec<float>) == 64 && sizeof(Vec<double>) == 64);

// s[r, j] = sum_d a[r, d] * bt[d, j] for r < rows, j < ld (bt is [D, ld], ld a multiple of
// 2 vectors): 4 rows x 2 vectors of accumulators stay in registers.
template <typename T>
void RowsTimesPacked(const T* a, int64_t rows, int64_t d_size, const T* bt, int64_t ld,
                     T* s) {
  constexpr int64_t W = kWidth<T>;
  for (int64_t j0 = 0; j0 < ld; j0 += 2 * W) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      Vec<T> acc[4][2] = {};
      for (int64_t d = 0; d < d_size; ++d) {
        Vec<T> b0 = Load(bt + d * ld + j0), b1 = Load(bt + d * ld + j0 + W);
        for (int i = 0; i < 4; ++i) {
          Vec<T> x = Splat(a[(r + i) * d_size + d]);
          acc[i][0] += x * b0;
          acc[i][1] += x * b1;
        }
      }
      for (int i = 0; i < 4; ++i) {
        Store(s + (r + i) * ld + j0, acc[i][0]);
        Store(s + (r + i) * ld + j0 + W, acc[i][1]);
      }
    }
    for (; r < rows; ++r) {
      Vec<T> acc0 = {}, acc1 = {};
      for (int64_t d = 0; d < d_size; ++d) {
        Vec<T> x = Splat(a[r * d_size + d]);
        acc0 += x * Load(bt + d * ld + j0);
        acc1 += x * Load(bt + d * ld + j0 + W);
      }
      Store(s + r * ld + j0, acc0);
      Store(s + r * ld + j0 + W, acc1);
    }
  }
}

// out[r, :] = sum_{j < cols} p[r, j] * m[j, :] (p is [rows, ld], m is [cols, D]).
template <typename T>
void RowsTimesMatrix(const T* p, int64_t rows, int64_t ld, int64_t cols, const T* m,
                     int64_t d_size, T* out) {
  constexpr int64_t W = kWidth<T>;
  int64_t d0 = 0;
  for (; d0 + W <= d_size; d0 += W) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
      Vec<T> acc[8] = {};
      for (int64_t j = 0; j < cols; ++j) {
        Vec<T> mj = Load(m + j * d_size + d0);
        for (int i = 0; i < 8; ++i) acc[i] += Splat(p[(r + i) * ld + j]) * mj;
      }
      for (int i = 0; i < 8; ++i) Store(out + (r + i) * d_size + d0, acc[i]);
    }
    for (; r < rows; ++r) {
      Vec<T> acc = {};
      for (int64_t j = 0; j < cols; ++j) acc += Splat(p[r * ld + j]) * Load(m + j * d_size + d0);
      Store(out + r * d_size + d0, acc);
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = d0; d < d_size; ++d) {
      T acc = 0;
      for (int64_t j = 0; j < cols; ++j) acc += p[r * ld + j] * m[j * d_size + d];
      out[r * d_size + d] = acc;
    }
}

// out[j, :] += sum_{r < rows} p[r, j] * a[r, :] for j < cols (a transposed product).
template <typename T>
void ColsTimesRows(const T* p, int64_t rows, int64_t ld, int64_t cols, const T* a,
                   int64_t d_size, T* out) {
  constexpr int64_t W = kWidth<T>;
  int64_t d0 = 0;
  for (; d0 + W <= d_size; d0 += W) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      Vec<T> acc[8] = {};
      for (int64_t r = 0; r < rows; ++r) {
        Vec<T> ar = Load(a + r * d_size + d0);
        for (int i = 0; i < 8; ++i) acc[i] += Splat(p[r * ld + j + i]) * ar;
      }
      for (int i = 0; i < 8; ++i) {
        T* o = out + (j + i) * d_size + d0;
        Store(o, Load(o) + acc[i]);
      }
    }
    for (; j < cols; ++j) {
      Vec<T> acc = {};
      for (int64_t r = 0; r < rows; ++r) acc += Splat(p[r * ld + j]) * Load(a + r * d_size + d0);
      T* o = out + j * d_size + d0;
      Store(o, Load(o) + acc);
    }
  }
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t d = d0; d < d_size; ++d) {
      T acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += p[r * ld + j] * a[r * d_size + d];
      out[j * d_size + d] += acc;
    }
}

struct Dims {
  int64_t b, t, s, n, d;
};

Dims DimsOf(ffi::AnyBuffer::Dimensions q, ffi::AnyBuffer::Dimensions k) {
  return {q[0], q[1], k[1], q[2], q[3]};
}

// The packed, per-(batch, head) copies of k (transposed, zero-padded) and v.
template <typename T>
struct Packed {
  std::vector<T> kt, k, v, vt;
};

template <typename T>
void Pack(const T* src, const Dims& dm, int64_t b, int64_t h, int64_t len, int64_t ld,
          T* rows, T* cols) {
  for (int64_t j = 0; j < len; ++j) {
    const T* x = src + ((b * dm.s + j) * dm.n + h) * dm.d;
    if (rows) std::memcpy(rows + j * dm.d, x, sizeof(T) * dm.d);
    if (cols)
      for (int64_t d = 0; d < dm.d; ++d) cols[d * ld + j] = x[d];
  }
}

template <typename T, typename Pool>
void Forward(const Dims& dm, const T* q, const T* k, const T* v, const int32_t* q_len,
             const int32_t* kv_len, T scale, T* o, T* lse, Pool& pool) {
  std::fill(o, o + dm.b * dm.t * dm.n * dm.d, T(0));
  std::fill(lse, lse + dm.b * dm.n * dm.t, T(0));
  ParallelFor(pool, dm.b * dm.n, [&](int64_t task) {
    int64_t b = task / dm.n, h = task % dm.n;
    int64_t lq = std::clamp<int64_t>(q_len[b], 0, dm.t);
    int64_t lk = std::clamp<int64_t>(kv_len[b], 0, dm.s);
    if (lq == 0 || lk == 0) return;
    int64_t ld = (lk + kLane - 1) / kLane * kLane;
    std::vector<T> kt(dm.d * ld, T(0)), vr(lk * dm.d), qb(kQueryBlock * dm.d),
        sc(kQueryBlock * ld), ob(kQueryBlock * dm.d);
    Pack(k, dm, b, h, lk, ld, static_cast<T*>(nullptr), kt.data());
    Pack(v, dm, b, h, lk, ld, vr.data(), static_cast<T*>(nullptr));
    for (int64_t i0 = 0; i0 < lq; i0 += kQueryBlock) {
      int64_t rows = std::min(kQueryBlock, lq - i0);
      for (int64_t r = 0; r < rows; ++r) {
        const T* x = q + ((b * dm.t + i0 + r) * dm.n + h) * dm.d;
        for (int64_t d = 0; d < dm.d; ++d) qb[r * dm.d + d] = x[d] * scale;
      }
      RowsTimesPacked(qb.data(), rows, dm.d, kt.data(), ld, sc.data());
      for (int64_t r = 0; r < rows; ++r) {
        T* s = sc.data() + r * ld;
        T m = s[0];
        for (int64_t j = 1; j < lk; ++j) m = std::max(m, s[j]);
        T sum = 0;
        for (int64_t j = 0; j < lk; ++j) {
          s[j] = std::exp(s[j] - m);
          sum += s[j];
        }
        T inv = T(1) / sum;
        for (int64_t j = 0; j < lk; ++j) s[j] *= inv;
        lse[(b * dm.n + h) * dm.t + i0 + r] = m + std::log(sum);
      }
      RowsTimesMatrix(sc.data(), rows, ld, lk, vr.data(), dm.d, ob.data());
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(o + ((b * dm.t + i0 + r) * dm.n + h) * dm.d, ob.data() + r * dm.d,
                    sizeof(T) * dm.d);
    }
  });
}

template <typename T, typename Pool>
void Backward(const Dims& dm, const T* q, const T* k, const T* v, const T* o, const T* lse,
              const T* dout, const int32_t* q_len, const int32_t* kv_len, T scale, T* dq,
              T* dk, T* dv, Pool& pool) {
  std::fill(dq, dq + dm.b * dm.t * dm.n * dm.d, T(0));
  std::fill(dk, dk + dm.b * dm.s * dm.n * dm.d, T(0));
  std::fill(dv, dv + dm.b * dm.s * dm.n * dm.d, T(0));
  ParallelFor(pool, dm.b * dm.n, [&](int64_t task) {
    int64_t b = task / dm.n, h = task % dm.n;
    int64_t lq = std::clamp<int64_t>(q_len[b], 0, dm.t);
    int64_t lk = std::clamp<int64_t>(kv_len[b], 0, dm.s);
    if (lq == 0 || lk == 0) return;
    int64_t ld = (lk + kLane - 1) / kLane * kLane, dd = dm.d;
    std::vector<T> kt(dd * ld, T(0)), vt(dd * ld, T(0)), kr(lk * dd), qb(kQueryBlock * dd),
        dob(kQueryBlock * dd), p(kQueryBlock * ld), dp(kQueryBlock * ld),
        dqb(kQueryBlock * dd), dka(lk * dd, T(0)), dva(lk * dd, T(0));
    Pack(k, dm, b, h, lk, ld, kr.data(), kt.data());
    Pack(v, dm, b, h, lk, ld, static_cast<T*>(nullptr), vt.data());
    for (int64_t i0 = 0; i0 < lq; i0 += kQueryBlock) {
      int64_t rows = std::min(kQueryBlock, lq - i0);
      T delta[kQueryBlock];
      for (int64_t r = 0; r < rows; ++r) {
        int64_t at = ((b * dm.t + i0 + r) * dm.n + h) * dd;
        T acc = 0;
        for (int64_t d = 0; d < dd; ++d) {
          qb[r * dd + d] = q[at + d] * scale;
          dob[r * dd + d] = dout[at + d];
          acc += dout[at + d] * o[at + d];
        }
        delta[r] = acc;
      }
      RowsTimesPacked(qb.data(), rows, dd, kt.data(), ld, p.data());
      RowsTimesPacked(dob.data(), rows, dd, vt.data(), ld, dp.data());
      for (int64_t r = 0; r < rows; ++r) {
        T l = lse[(b * dm.n + h) * dm.t + i0 + r];
        T* pr = p.data() + r * ld;
        T* dpr = dp.data() + r * ld;
        for (int64_t j = 0; j < lk; ++j) {
          pr[j] = std::exp(pr[j] - l);
          dpr[j] = pr[j] * (dpr[j] - delta[r]);  // dS
        }
      }
      ColsTimesRows(p.data(), rows, ld, lk, dob.data(), dd, dva.data());
      ColsTimesRows(dp.data(), rows, ld, lk, qb.data(), dd, dka.data());
      RowsTimesMatrix(dp.data(), rows, ld, lk, kr.data(), dd, dqb.data());
      for (int64_t r = 0; r < rows; ++r) {
        T* x = dq + ((b * dm.t + i0 + r) * dm.n + h) * dd;
        for (int64_t d = 0; d < dd; ++d) x[d] = dqb[r * dd + d] * scale;
      }
    }
    for (int64_t j = 0; j < lk; ++j) {
      int64_t at = ((b * dm.s + j) * dm.n + h) * dd;
      std::memcpy(dk + at, dka.data() + j * dd, sizeof(T) * dd);
      std::memcpy(dv + at, dva.data() + j * dd, sizeof(T) * dd);
    }
  });
}

template <typename T>
T* Data(ffi::AnyBuffer& x) {
  return reinterpret_cast<T*>(x.untyped_data());
}
template <typename T>
T* Data(ffi::Result<ffi::AnyBuffer>& x) {
  return reinterpret_cast<T*>(x->untyped_data());
}

ffi::Error CheckShapes(ffi::AnyBuffer& q, ffi::AnyBuffer& k, ffi::AnyBuffer& v) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4)
    return ffi::Error::InvalidArgument("attention_cpu: q, k, v must be [B, T, N, D]");
  if (qd[0] != kd[0] || qd[2] != kd[2] || qd[3] != kd[3] || kd[0] != vd[0] ||
      kd[1] != vd[1] || kd[2] != vd[2] || kd[3] != vd[3])
    return ffi::Error::InvalidArgument("attention_cpu: q, k, v shapes disagree");
  if (q.element_type() != k.element_type() || q.element_type() != v.element_type())
    return ffi::Error::InvalidArgument("attention_cpu: q, k, v dtypes disagree");
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Buffer<ffi::S32> q_len, ffi::Buffer<ffi::S32> kv_len, double scale,
                   ffi::Result<ffi::AnyBuffer> o, ffi::Result<ffi::AnyBuffer> lse) {
  if (auto err = CheckShapes(q, k, v); err.failure()) return err;
  Dims dm = DimsOf(q.dimensions(), k.dimensions());
  switch (q.element_type()) {
    case ffi::F32:
      Forward<float>(dm, Data<float>(q), Data<float>(k), Data<float>(v), q_len.typed_data(),
                     kv_len.typed_data(), float(scale), Data<float>(o), Data<float>(lse),
                     pool);
      return ffi::Error::Success();
    case ffi::F64:
      Forward<double>(dm, Data<double>(q), Data<double>(k), Data<double>(v),
                      q_len.typed_data(), kv_len.typed_data(), scale, Data<double>(o),
                      Data<double>(lse), pool);
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("attention_cpu: float32 or float64 only");
  }
}

ffi::Error BwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::AnyBuffer o, ffi::AnyBuffer lse, ffi::AnyBuffer dout,
                   ffi::Buffer<ffi::S32> q_len, ffi::Buffer<ffi::S32> kv_len, double scale,
                   ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                   ffi::Result<ffi::AnyBuffer> dv) {
  if (auto err = CheckShapes(q, k, v); err.failure()) return err;
  Dims dm = DimsOf(q.dimensions(), k.dimensions());
  switch (q.element_type()) {
    case ffi::F32:
      Backward<float>(dm, Data<float>(q), Data<float>(k), Data<float>(v), Data<float>(o),
                      Data<float>(lse), Data<float>(dout), q_len.typed_data(),
                      kv_len.typed_data(), float(scale), Data<float>(dq), Data<float>(dk),
                      Data<float>(dv), pool);
      return ffi::Error::Success();
    case ffi::F64:
      Backward<double>(dm, Data<double>(q), Data<double>(k), Data<double>(v), Data<double>(o),
                       Data<double>(lse), Data<double>(dout), q_len.typed_data(),
                       kv_len.typed_data(), scale, Data<double>(dq), Data<double>(dk),
                       Data<double>(dv), pool);
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("attention_cpu: float32 or float64 only");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MediafmAttentionFwd, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<double>("scale")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MediafmAttentionBwd, BwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<double>("scale")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
