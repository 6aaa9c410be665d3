// The chunk loop of the neural memory (chunk gates with momentum), forward and
// outer backward, one memory per task: every memory's weights, momenta and
// chunk activations stay in the core's cache while its chunks run, and the
// elementwise steps (SiLU and its derivatives, the weight and momentum
// updates, the gate gradients) are fused into the passes that produce them.
//
// The arithmetic is that of _chunk_forward / _chunk_backward in memory.py,
// equation for equation; the tests hold both to the float64 reference.
//
// Layout (row-major, contiguous): Q, K [N, n·b, d_0], V [N, n·b, d_L],
// two_theta [N, n, b], keep, eta [N, n], W_l, S_l [N, d_l, d_{l+1}].
// The small products go to the BLAS that ships inside torch (sgemm_/dgemm_);
// called inside the parallel region it runs on one thread.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*);
}

namespace {

using at::Tensor;

// Row-major C[m×n] = alpha · op(A)[m×k] op(B)[k×n] + beta · C, through the
// column-major BLAS: Cᵀ = op(B)ᵀ op(A)ᵀ.
template <typename T>
void mm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
        int ldb, T beta, T* c, int ldc) {
  const char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&tra, &trb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
  } else {
    dgemm_(&tra, &trb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
  }
}

template <typename T>
inline T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

// H = SiLU(Z), D1 = SiLU'(Z) over all rows; D2 = SiLU''(Z) over the key rows
// (the last b of 2b):  SiLU' = s + z u,  SiLU'' = u (2 + z − 2h),  u = s − s².
template <typename T>
void silu_with_grads(const T* z, T* h, T* d1, T* d2, int rows, int key_from, int width) {
  for (int r = 0; r < rows; ++r) {
    const T* zr = z + (int64_t)r * width;
    T* hr = h + (int64_t)r * width;
    T* d1r = d1 + (int64_t)r * width;
    if (r < key_from) {
#pragma omp simd
      for (int j = 0; j < width; ++j) {
        const T x = zr[j], s = sigmoid(x), u = s - s * s;
        hr[j] = x * s;
        d1r[j] = s + x * u;
      }
    } else {
      T* d2r = d2 + (int64_t)(r - key_from) * width;
#pragma omp simd
      for (int j = 0; j < width; ++j) {
        const T x = zr[j], s = sigmoid(x), u = s - s * s, hv = x * s;
        hr[j] = hv;
        d1r[j] = s + x * u;
        d2r[j] = u * (T(2) + x - T(2) * hv);
      }
    }
  }
}

struct Dims {
  int64_t N, n, b, L;
  std::vector<int64_t> d;  // d_0 … d_L
  int64_t wsize(int64_t l) const { return d[l] * d[l + 1]; }
  int64_t dmax() const { return *std::max_element(d.begin(), d.end()); }
};

Dims dims_of(const Tensor& q, const Tensor& keep, const Tensor& two_theta,
             const std::vector<Tensor>& W) {
  Dims D;
  D.N = q.size(0);
  D.n = keep.size(1);
  D.b = two_theta.size(2);
  D.L = (int64_t)W.size();
  D.d.push_back(W[0].size(1));
  for (const auto& w : W) D.d.push_back(w.size(2));
  return D;
}

// One saved quantity: a tensor [N, …] per layer and chunk. Separate tensors
// of a chunk's size (not one [N, n, …] block) come from the allocator's free
// lists, where one large block would be fresh pages each call.
struct Slots {
  std::vector<Tensor> t;  // layer-major: t[layer · n + chunk]
  int64_t n = 0;  // slots per layer: every chunk's, or a ring of two when nothing is kept
  void add(int64_t chunks, at::IntArrayRef shape, const at::TensorOptions& opt) {
    n = chunks;
    for (int64_t i = 0; i < chunks; ++i) t.push_back(at::empty(shape, opt));
  }
  void take(const std::vector<Tensor>& all, size_t& pos, int64_t layers, int64_t chunks) {
    n = chunks;
    t.assign(all.begin() + pos, all.begin() + pos + layers * chunks);
    pos += layers * chunks;
  }
  template <typename T>
  T* p(int64_t layer, int64_t chunk, int64_t m) const {
    const Tensor& x = t[layer * n + chunk % n];
    return x.data_ptr<T>() + m * x.stride(0);
  }
};

// Saved per layer and chunk ([N, …]):
//   Ws_l, Ss_l   chunk-start weights and momenta           [d_l, d_{l+1}]
//   H_l (l ≥ 1)  layer inputs over [Q;K]                    [2b, d_l]
//   D1_l, D2_l (l < L−1)  SiLU'(Z_l) over [Q;K], SiLU''(Z_l) over K   [2b | b, d_{l+1}]
//   Dl_l        Δ_l (weighted inner gradient at layer l's output)     [b, d_{l+1}]
//   P_l (l ≥ 1)  Δ_l W_lᵀ                                   [b, d_l]
//   E            M(K) − V                                   [b, d_L]

template <typename T>
std::vector<Tensor> forward_impl(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& two_theta, const Tensor& keep,
                                 const Tensor& eta, const std::vector<Tensor>& W0,
                                 const std::vector<Tensor>& S0, bool keep_saved) {
  const Dims D = dims_of(q, keep, two_theta, W0);
  const int64_t N = D.N, n = D.n, b = D.b, L = D.L;
  auto opt = q.options();
  Tensor y = at::empty({N, n * b, D.d[L]}, opt);
  Slots Ws, Ss, H, D1, D2, Dl, P, E;
  std::vector<Tensor> Wout, Sout;
  const int64_t slots = keep_saved ? n : std::min<int64_t>(n, 2);  // inference: a ring of two
  for (int64_t l = 0; l < L; ++l) {
    Ws.add(slots, {N, D.d[l], D.d[l + 1]}, opt);
    Ss.add(slots, {N, D.d[l], D.d[l + 1]}, opt);
    Dl.add(slots, {N, b, D.d[l + 1]}, opt);
    Wout.push_back(at::empty({N, D.d[l], D.d[l + 1]}, opt));
    Sout.push_back(at::empty({N, D.d[l], D.d[l + 1]}, opt));
    if (l >= 1) {
      H.add(slots, {N, 2 * b, D.d[l]}, opt);
      P.add(slots, {N, b, D.d[l]}, opt);
    }
    if (l < L - 1) {
      D1.add(slots, {N, 2 * b, D.d[l + 1]}, opt);
      D2.add(slots, {N, b, D.d[l + 1]}, opt);
    }
  }
  E.add(slots, {N, b, D.d[L]}, opt);

  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  const T* ttp = two_theta.data_ptr<T>();
  const T* keepp = keep.data_ptr<T>();
  const T* etap = eta.data_ptr<T>();
  const int64_t d0 = D.d[0], dL = D.d[L], dmax = D.dmax();

  at::parallel_for(0, N, 1, [&](int64_t m0, int64_t m1) {
    std::vector<T> z(2 * b * dmax);
    for (int64_t m = m0; m < m1; ++m) {
      // chunk 0 starts from the given weights and momenta
      for (int64_t l = 0; l < L; ++l) {
        const int64_t ws = D.wsize(l);
        std::copy_n(W0[l].data_ptr<T>() + m * ws, ws, Ws.p<T>(l, 0, m));
        std::copy_n(S0[l].data_ptr<T>() + m * ws, ws, Ss.p<T>(l, 0, m));
      }
      for (int64_t i = 0; i < n; ++i) {
        const T* Qi = qp + (m * n * b + i * b) * d0;
        const T* Ki = kp + (m * n * b + i * b) * d0;
        const T* Vi = vp + (m * n * b + i * b) * dL;
        const T* tt = ttp + (m * n + i) * b;
        // Y = M(Q), M(K): the MLP over [Q;K] at the chunk-start weights
        for (int64_t l = 0; l < L; ++l) {
          const int64_t di = D.d[l], dout = D.d[l + 1], ws = D.wsize(l);
          const T* w = Ws.p<T>(l, i, m);
          T* out = (l < L - 1) ? z.data() : nullptr;
          T* yq = y.data_ptr<T>() + (m * n * b + i * b) * dL;
          T* ek = E.p<T>(0, i, m);
          T* oq = out ? out : yq;
          T* ok = out ? out + b * dout : ek;
          if (l == 0) {
            mm<T>(false, false, b, dout, di, 1, Qi, di, w, dout, 0, oq, dout);
            mm<T>(false, false, b, dout, di, 1, Ki, di, w, dout, 0, ok, dout);
          } else {
            const T* hin = H.p<T>(l - 1, i, m);
            mm<T>(false, false, b, dout, di, 1, hin, di, w, dout, 0, oq, dout);
            mm<T>(false, false, b, dout, di, 1, hin + b * di, di, w, dout, 0, ok, dout);
          }
          if (l < L - 1) {
            T* h = H.p<T>(l, i, m);
            T* d1 = D1.p<T>(l, i, m);
            T* d2 = D2.p<T>(l, i, m);
            silu_with_grads<T>(z.data(), h, d1, d2, 2 * b, b, dout);
          }
        }
        // E = M(K) − V;  Δ_L = E ⊙ 2θ
        T* e = E.p<T>(0, i, m);
        T* delta = Dl.p<T>(L - 1, i, m);
        for (int64_t r = 0; r < b; ++r) {
          const T s = tt[r];
#pragma omp simd
          for (int64_t j = 0; j < dL; ++j) {
            const T ev = e[r * dL + j] - Vi[r * dL + j];
            e[r * dL + j] = ev;
            delta[r * dL + j] = ev * s;
          }
        }
        // P_l = Δ_l W_lᵀ,  Δ_{l−1} = P_l ⊙ SiLU'(Z_{l−1}) over the key rows
        for (int64_t l = L - 1; l >= 1; --l) {
          const int64_t di = D.d[l], dout = D.d[l + 1];
          const T* w = Ws.p<T>(l, i, m);
          const T* dl = Dl.p<T>(l, i, m);
          T* p = P.p<T>(l - 1, i, m);
          mm<T>(false, true, b, di, dout, 1, dl, dout, w, dout, 0, p, di);
          const T* d1k = D1.p<T>(l - 1, i, m) + b * di;
          T* dprev = Dl.p<T>(l - 1, i, m);
#pragma omp simd
          for (int64_t j = 0; j < b * di; ++j) dprev[j] = p[j] * d1k[j];
        }
        // S' = η S − Hᵀ Δ,  W' = (1 − α) W + S'   (into the next chunk's slots)
        const T kp_ = keepp[m * n + i], ep = etap[m * n + i];
        for (int64_t l = 0; l < L; ++l) {
          const int64_t di = D.d[l], dout = D.d[l + 1], ws = D.wsize(l);
          const T* w = Ws.p<T>(l, i, m);
          const T* s = Ss.p<T>(l, i, m);
          const bool last = i == n - 1;
          T* wn = last ? Wout[l].data_ptr<T>() + m * ws : Ws.p<T>(l, i + 1, m);
          T* sn = last ? Sout[l].data_ptr<T>() + m * ws : Ss.p<T>(l, i + 1, m);
#pragma omp simd
          for (int64_t j = 0; j < ws; ++j) sn[j] = ep * s[j];
          const T* hk = (l == 0) ? Ki : H.p<T>(l - 1, i, m) + b * di;
          const T* dl = Dl.p<T>(l, i, m);
          mm<T>(true, false, di, dout, b, -1, hk, di, dl, dout, 1, sn, dout);
#pragma omp simd
          for (int64_t j = 0; j < ws; ++j) wn[j] = kp_ * w[j] + sn[j];
        }
      }
    }
  });
  std::vector<Tensor> out{y};
  out.insert(out.end(), Wout.begin(), Wout.end());
  out.insert(out.end(), Sout.begin(), Sout.end());
  if (keep_saved)
    for (const Slots* g : {&Ws, &Ss, &H, &D1, &D2, &Dl, &P, &E}) out.insert(out.end(), g->t.begin(), g->t.end());
  return out;
}

template <typename T>
T dot(const T* a, const T* c, int64_t len) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < len; ++j) acc += a[j] * c[j];
  return acc;
}

template <typename T>
std::vector<Tensor> backward_impl(const Tensor& q, const Tensor& k, const Tensor& two_theta,
                                  const Tensor& keep, const Tensor& eta,
                                  const std::vector<Tensor>& saved, const Tensor& g_y,
                                  const std::vector<Tensor>& g_w, const std::vector<Tensor>& g_s) {
  const int64_t L = (int64_t)g_w.size();
  const int64_t N = q.size(0), n = keep.size(1), b = two_theta.size(2);
  // saved: Ws (L), Ss (L), H (L−1), D1 (L−1), D2 (L−1), Dl (L), P (L−1), E (1) layers of n chunks
  Slots Ws, Ss, H, D1, D2, Dl, P, E;
  size_t pos = 0;
  for (auto [g, layers] : {std::pair{&Ws, L}, {&Ss, L}, {&H, L - 1}, {&D1, L - 1}, {&D2, L - 1},
                           {&Dl, L}, {&P, L - 1}, {&E, int64_t(1)}})
    g->take(saved, pos, layers, n);
  TORCH_CHECK(pos == saved.size(), "the chunk loop's saved tensors do not match its depth");
  std::vector<Tensor> W0;  // chunk 0's weights: the layer shapes
  for (int64_t l = 0; l < L; ++l) W0.push_back(Ws.t[l * n]);
  const Dims D = dims_of(q, keep, two_theta, W0);
  const std::vector<int64_t>& d = D.d;
  const int64_t d0 = d[0], dL = d[L], dmax = D.dmax();
  auto wsize = [&](int64_t l) { return D.wsize(l); };

  auto opt = q.options();
  Tensor g_q = at::empty({N, n * b, d0}, opt), g_k = at::empty({N, n * b, d0}, opt);
  Tensor g_v = at::empty({N, n * b, dL}, opt), g_tt = at::empty({N, n, b}, opt);
  Tensor g_keep = at::empty({N, n}, opt), g_eta = at::empty({N, n}, opt);
  std::vector<Tensor> gW0, gS0;
  for (int64_t l = 0; l < L; ++l) {
    gW0.push_back(g_w[l].defined() ? g_w[l].clone() : at::zeros({N, d[l], d[l + 1]}, opt));
    gS0.push_back(g_s[l].defined() ? g_s[l].clone() : at::zeros({N, d[l], d[l + 1]}, opt));
  }
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* ttp = two_theta.data_ptr<T>();
  const T* keepp = keep.data_ptr<T>();
  const T* etap = eta.data_ptr<T>();
  const T* gyp = g_y.defined() ? g_y.data_ptr<T>() : nullptr;

  at::parallel_for(0, N, 1, [&](int64_t m0, int64_t m1) {
    std::vector<std::vector<T>> R(L), Nl(L), extra(L);
    for (int64_t l = 0; l < L; ++l) {
      R[l].resize(wsize(l));
      Nl[l].resize(b * d[l + 1]);
      extra[l].resize(b * d[l + 1]);
    }
    std::vector<T> negp(b * dmax), gz(2 * b * dmax), gh(2 * b * dmax);
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t i = n - 1; i >= 0; --i) {
        const int64_t mi = m * n + i;
        const T kp_ = keepp[mi], ep = etap[mi];
        const T* Qi = qp + (m * n * b + i * b) * d0;
        const T* Ki = kp + (m * n * b + i * b) * d0;
        const T* tt = ttp + mi * b;
        // W' = (1 − α) W + S',  S' = η S − G:  R = dℒ/dS' = gW' + gS'
        T gk = 0, ge = 0;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t ws = wsize(l);
          T* gw = gW0[l].data_ptr<T>() + m * ws;
          T* gs = gS0[l].data_ptr<T>() + m * ws;
          const T* w = Ws.p<T>(l, i, m);
          const T* s = Ss.p<T>(l, i, m);
          T* r = R[l].data();
          T acc_k = 0, acc_e = 0;
#pragma omp simd reduction(+ : acc_k, acc_e)
          for (int64_t j = 0; j < ws; ++j) {
            const T gwj = gw[j], rj = gwj + gs[j];
            acc_k += gwj * w[j];
            acc_e += rj * s[j];
            r[j] = rj;
            gw[j] = kp_ * gwj;
            gs[j] = ep * rj;
          }
          gk += acc_k;
          ge += acc_e;
        }
        g_keep.data_ptr<T>()[mi] = gk;
        g_eta.data_ptr<T>()[mi] = ge;
        // N_l = H_lᵀ-rows(K) R_l = −dℒ/dΔ_l
        for (int64_t l = 0; l < L; ++l) {
          const int64_t di = d[l], dout = d[l + 1];
          const T* hk = (l == 0) ? Ki : H.p<T>(l - 1, i, m) + b * di;
          mm<T>(false, false, b, dout, di, 1, hk, di, R[l].data(), dout, 0, Nl[l].data(), dout);
        }
        // Δ_{l−1} = P_l ⊙ SiLU'(Z_{l−1}), P_l = Δ_l W_lᵀ, upwards
        for (int64_t l = 1; l < L; ++l) {
          const int64_t di = d[l], dout = d[l + 1];
          const T* d1k = D1.p<T>(l - 1, i, m) + b * di;
          const T* d2 = D2.p<T>(l - 1, i, m);
          const T* p = P.p<T>(l - 1, i, m);
          const T* nprev = Nl[l - 1].data();
          T* ex = extra[l - 1].data();
#pragma omp simd
          for (int64_t j = 0; j < b * di; ++j) {
            negp[j] = nprev[j] * d1k[j];
            ex[j] = nprev[j] * p[j] * d2[j];
          }
          const T* w = Ws.p<T>(l, i, m);
          mm<T>(false, false, b, dout, di, 1, negp.data(), di, w, dout, 1, Nl[l].data(), dout);
          const T* dl = Dl.p<T>(l, i, m);
          T* gw = gW0[l].data_ptr<T>() + m * wsize(l);
          mm<T>(true, false, di, dout, b, -1, negp.data(), di, dl, dout, 1, gw, dout);
        }
        // Δ_L = E ⊙ 2θ
        const T* e = E.p<T>(0, i, m);
        T* gv = g_v.data_ptr<T>() + (m * n * b + i * b) * dL;
        const T* nL = Nl[L - 1].data();
        for (int64_t r = 0; r < b; ++r) {
          const T s = tt[r];
          g_tt.data_ptr<T>()[mi * b + r] = -dot<T>(nL + r * dL, e + r * dL, dL);
#pragma omp simd
          for (int64_t j = 0; j < dL; ++j) gv[r * dL + j] = nL[r * dL + j] * s;
        }
        // the MLP over [Q;K] from the top: dℒ/dZ_L = [g_y ; −g_v]
        if (gyp) {
          std::copy_n(gyp + (m * n * b + i * b) * dL, b * dL, gz.data());
        } else {
          std::fill_n(gz.data(), b * dL, T(0));
        }
        for (int64_t j = 0; j < b * dL; ++j) gz[b * dL + j] = -gv[j];
        for (int64_t l = L - 1; l >= 0; --l) {
          const int64_t di = d[l], dout = d[l + 1];
          const T* w = Ws.p<T>(l, i, m);
          T* gw = gW0[l].data_ptr<T>() + m * wsize(l);
          const T* dl = Dl.p<T>(l, i, m);
          T *ghq, *ghk;
          if (l == 0) {
            mm<T>(true, false, di, dout, b, 1, Qi, di, gz.data(), dout, 1, gw, dout);
            mm<T>(true, false, di, dout, b, 1, Ki, di, gz.data() + b * dout, dout, 1, gw, dout);
            ghq = g_q.data_ptr<T>() + (m * n * b + i * b) * d0;
            ghk = g_k.data_ptr<T>() + (m * n * b + i * b) * d0;
          } else {
            const T* hin = H.p<T>(l - 1, i, m);
            mm<T>(true, false, di, dout, 2 * b, 1, hin, di, gz.data(), dout, 1, gw, dout);
            ghq = gh.data();
            ghk = gh.data() + b * di;
          }
          mm<T>(false, true, b, di, dout, 1, gz.data(), dout, w, dout, 0, ghq, di);
          mm<T>(false, true, b, di, dout, 1, gz.data() + b * dout, dout, w, dout, 0, ghk, di);
          mm<T>(false, true, b, di, dout, -1, dl, dout, R[l].data(), dout, 1, ghk, di);
          if (l > 0) {
            const T* d1 = D1.p<T>(l - 1, i, m);
            const T* ex = extra[l - 1].data();
#pragma omp simd
            for (int64_t j = 0; j < b * di; ++j) gz[j] = gh[j] * d1[j];
#pragma omp simd
            for (int64_t j = b * di; j < 2 * b * di; ++j) gz[j] = gh[j] * d1[j] - ex[j - b * di];
          }
        }
      }
    }
  });
  std::vector<Tensor> out{g_q, g_k, g_v, g_tt, g_keep, g_eta};
  out.insert(out.end(), gW0.begin(), gW0.end());
  out.insert(out.end(), gS0.begin(), gS0.end());
  return out;
}

void check(const Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
}

std::vector<Tensor> forward(Tensor q, Tensor k, Tensor v, Tensor two_theta, Tensor keep,
                            Tensor eta, std::vector<Tensor> W, std::vector<Tensor> S,
                            bool keep_saved) {
  const auto dtype = q.scalar_type();
  for (const auto* t : {&q, &k, &v, &two_theta, &keep, &eta}) check(*t, "input", dtype);
  for (const auto& t : W) check(t, "weight", dtype);
  for (const auto& t : S) check(t, "momentum", dtype);
  if (dtype == at::kFloat) return forward_impl<float>(q, k, v, two_theta, keep, eta, W, S, keep_saved);
  TORCH_CHECK(dtype == at::kDouble, "the native chunk loop takes float32 or float64");
  return forward_impl<double>(q, k, v, two_theta, keep, eta, W, S, keep_saved);
}

std::vector<Tensor> backward(Tensor q, Tensor k, Tensor two_theta, Tensor keep, Tensor eta,
                             std::vector<Tensor> saved, c10::optional<Tensor> g_y,
                             std::vector<c10::optional<Tensor>> g_w,
                             std::vector<c10::optional<Tensor>> g_s) {
  const auto dtype = q.scalar_type();
  std::vector<Tensor> gw, gs;
  for (auto& t : g_w) gw.push_back(t.has_value() ? t->contiguous() : Tensor());
  for (auto& t : g_s) gs.push_back(t.has_value() ? t->contiguous() : Tensor());
  Tensor gy = g_y.has_value() ? g_y->contiguous() : Tensor();
  if (dtype == at::kFloat) return backward_impl<float>(q, k, two_theta, keep, eta, saved, gy, gw, gs);
  TORCH_CHECK(dtype == at::kDouble, "the native chunk loop takes float32 or float64");
  return backward_impl<double>(q, k, two_theta, keep, eta, saved, gy, gw, gs);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "chunk loop forward");
  m.def("backward", &backward, "chunk loop outer backward");
}
