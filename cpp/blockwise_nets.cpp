#include "blockwise_nets.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "parallel.hpp"

namespace hetmtl::blockwise {

using MapM = Eigen::Map<Mat>;
using CMapM = Eigen::Map<const Mat>;

// ---------------------------------------------------------------------------------- layout
int Layout::add(const std::string& name, int rows, int cols, int lead) {
  tensors_.push_back({name, lead > 0, std::max(lead, 1), rows, cols, size_});
  size_ += static_cast<std::size_t>(std::max(lead, 1)) * rows * cols;
  return static_cast<int>(tensors_.size()) - 1;
}

Mlp add_mlp(Layout& layout, const std::string& name, int in, int hidden, int out, int depth, int lead,
            bool relu_last) {
  Mlp m;
  m.relu_last = relu_last;
  for (int k = 0; k < depth; ++k) {
    const int rows = k == 0 ? in : hidden, cols = k + 1 < depth ? hidden : out;
    m.W.push_back(layout.add(name + std::to_string(k) + ".W", rows, cols, lead));
    m.b.push_back(layout.add(name + std::to_string(k) + ".b", 1, cols, lead));
  }
  return m;
}

namespace {

struct View {
  const Layout& L;
  CMapM operator()(const float* th, int i, int t = 0) const {
    const TensorSpec& s = L.tensors()[i];
    return CMapM(th + s.offset + static_cast<std::size_t>(t) * s.rows * s.cols, s.rows, s.cols);
  }
  MapM operator()(float* th, int i, int t = 0) const {
    const TensorSpec& s = L.tensors()[i];
    return MapM(th + s.offset + static_cast<std::size_t>(t) * s.rows * s.cols, s.rows, s.cols);
  }
};

inline void relu(Mat& a) { a = a.cwiseMax(0.0f); }
inline void relu_grad(Mat& d, const Mat& a) { d = (a.array() > 0.0f).select(d, 0.0f); }

// a = x W + b (b a 1 x out row), then ReLU when asked.
inline void dense(Mat& a, const Eigen::Ref<const Mat>& x, const CMapM& W, const CMapM& b, bool act) {
  a.noalias() = x * W;
  a.rowwise() += b.row(0);
  if (act) relu(a);
}

// Forward of an MLP on task slice t; acts[k] is layer k's output.
void mlp_forward(const View& V, const float* th, const Mlp& m, int t, const Eigen::Ref<const Mat>& x,
                 std::vector<Mat>& acts) {
  const std::size_t n = m.W.size();
  acts.resize(n);
  for (std::size_t k = 0; k < n; ++k)
    dense(acts[k], k == 0 ? x : Eigen::Ref<const Mat>(acts[k - 1]), V(th, m.W[k], t), V(th, m.b[k], t),
          k + 1 < n || m.relu_last);
}

// Backward of mlp_forward: `d` is the gradient of the loss with respect to the output (consumed);
// gradients are added to g; the gradient with respect to the input goes to dx when not null.
void mlp_backward(const View& V, const float* th, float* g, const Mlp& m, int t, const Eigen::Ref<const Mat>& x,
                  std::vector<Mat>& acts, Mat& d, Mat* dx) {
  const std::size_t n = m.W.size();
  for (std::size_t k = n; k-- > 0;) {
    if (k + 1 < n || m.relu_last) relu_grad(d, acts[k]);
    const Eigen::Ref<const Mat> in = k == 0 ? x : Eigen::Ref<const Mat>(acts[k - 1]);
    V(g, m.W[k], t).noalias() += in.transpose() * d;
    V(g, m.b[k], t) += d.colwise().sum();
    if (k > 0) {
      Mat prev = d * V(th, m.W[k], t).transpose();
      d.swap(prev);
    } else if (dx) {
      dx->noalias() = d * V(th, m.W[k], t).transpose();
    }
  }
}

// ---------------------------------------------------------------------------------- RNG
// xoshiro256** seeded by splitmix64: the mini-batch order (the same for every configuration).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    for (auto& w : s_) {
      seed += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      w = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  std::uint64_t below(std::uint64_t n) {  // uniform on 0..n-1 (rejection, no modulo bias)
    const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
    std::uint64_t r;
    do r = next();
    while (r >= limit);
    return r % n;
  }
  void shuffle(std::vector<int>& v) {  // Fisher-Yates
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

// ---------------------------------------------------------------------------------- Adam
// PyTorch's Adam rule (no weight decay) on a flat buffer.
class Adam {
 public:
  explicit Adam(std::size_t n) : m_(n, 0.0f), v_(n, 0.0f) {}
  void step(std::vector<float>& p, const std::vector<float>& g, float lr) {
    ++t_;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float step = lr / (1.0f - std::pow(b1, static_cast<float>(t_)));
    const float bc2_sqrt = std::sqrt(1.0f - std::pow(b2, static_cast<float>(t_)));
    for (std::size_t i = 0; i < p.size(); ++i) {
      m_[i] = b1 * m_[i] + (1.0f - b1) * g[i];
      v_[i] = b2 * v_[i] + (1.0f - b2) * g[i] * g[i];
      p[i] -= step * m_[i] / (std::sqrt(v_[i]) / bc2_sqrt + eps);
    }
  }

 private:
  std::vector<float> m_, v_;
  long t_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------- Step 2
Step2Net::Step2Net(const Step2Spec& s) : s_(s) {
  const int h = s.width, L = s.depth, T = s.T;
  if (h < 1 || L < 1 || T < 1 || s.p0 < 1 || s.P < 1) throw std::invalid_argument("Step2Net: invalid sizes");
  auto name = [](const char* base, int l, const char* suffix) { return std::string(base) + std::to_string(l) + suffix; };
  enc_c_ = add_mlp(layout_, "c", s.p0, h, h, L, 0, true);
  enc_u_ = add_mlp(layout_, "u", s.P, h, h, L, T, true);
  const Mlp shared = add_mlp(layout_, "g", 2 * h, h, h, L, 0, true);  // the shared pathway's layers
  g_W_ = shared.W;
  g_b_ = shared.b;
  gout_W_ = layout_.add("gout.W", h, 1);
  gout_b_ = layout_.add("gout.b", 1, 1);
  for (int l = 0; l < L; ++l) {
    r_W_.push_back(layout_.add(name("r", l, ".W"), l == 0 ? 2 * h : h, h, T));
    r_b_.push_back(layout_.add(name("r", l, ".b"), 1, h, T));
    rs_W_.push_back(l == 0 ? -1 : layout_.add(name("rs", l, ".W"), h, h, T));
  }
  rout_W_ = layout_.add("rout.W", 2 * h, 1, T);
  rout_b_ = layout_.add("rout.b", 1, 1, T);
  if (static_cast<int>(s.imputed.size()) != T) throw std::invalid_argument("Step2Net: one imputed list per task");
  for (const auto& cols : s.imputed)
    for (int j : cols)
      if (j < 0 || j >= s.P) throw std::invalid_argument("Step2Net: imputed column out of range");
  cache_.resize(T);
}

void Step2Net::forward(const float* th, int t, const TaskData& d, Cache& c) const {
  const View V{layout_};
  const int h = s_.width, L = s_.depth;
  mlp_forward(V, th, enc_c_, 0, d.x0, c.ac);
  mlp_forward(V, th, enc_u_, t, d.xf, c.au);
  c.z.resize(d.x0.rows(), 2 * h);
  c.z.leftCols(h) = c.au[L - 1];
  c.z.rightCols(h) = c.ac[L - 1];
  c.ho.resize(L);
  c.hr.resize(L);
  dense(c.ho[0], c.z, V(th, g_W_[0]), V(th, g_b_[0]), true);
  dense(c.hr[0], c.z, V(th, r_W_[0], t), V(th, r_b_[0], t), true);
  for (int l = 1; l < L; ++l) {
    dense(c.hr[l], c.hr[l - 1], V(th, r_W_[l], t), V(th, r_b_[l], t), false);
    c.hr[l].noalias() += c.ho[l - 1] * V(th, rs_W_[l], t);
    relu(c.hr[l]);
    dense(c.ho[l], c.ho[l - 1], V(th, g_W_[l]), V(th, g_b_[l]), true);
  }
  const CMapM rout = V(th, rout_W_, t), gout = V(th, gout_W_);
  c.yhat.noalias() = c.hr[L - 1] * rout.topRows(h).col(0);
  c.yhat.noalias() += c.ho[L - 1] * (rout.bottomRows(h).col(0) + gout.col(0));
  c.yhat.array() += V(th, rout_b_, t)(0, 0) + V(th, gout_b_)(0, 0);
}

float Step2Net::regularisers(const float* th, float* g, Step2Terms* terms) const {
  const View V{layout_};
  const int h = s_.width, L = s_.depth, T = s_.T;
  // R_imp: squared first-layer weights of each task encoder on its imputed columns
  float imp = 0;
  for (int t = 0; t < T; ++t) {
    const CMapM W = V(th, enc_u_.W[0], t);
    for (int j : s_.imputed[t]) {
      imp += W.row(j).squaredNorm();
      if (g) V(g, enc_u_.W[0], t).row(j) += 2.0f * s_.lambda_imp * W.row(j);
    }
  }
  // R_dr: shared hidden weights against the task weights on the shared activations, and the
  // output weights on the shared activations against the shared output weights
  float dr = 0;
  for (int l = 1; l < L; ++l) {
    const CMapM Wg = V(th, g_W_[l]);
    if (s_.per_task_dr) {
      for (int t = 0; t < T; ++t) {
        const CMapM Ws = V(th, rs_W_[l], t);
        const Mat P = Wg.transpose() * Ws;
        dr += P.squaredNorm();
        if (g) {
          V(g, g_W_[l]).noalias() += (2.0f * s_.lambda_dr) * (Ws * P.transpose());
          V(g, rs_W_[l], t).noalias() += (2.0f * s_.lambda_dr) * (Wg * P);
        }
      }
    } else {
      Mat S = Mat::Zero(h, h);
      for (int t = 0; t < T; ++t) S.noalias() += Wg.transpose() * V(th, rs_W_[l], t);
      dr += S.squaredNorm();
      if (g)
        for (int t = 0; t < T; ++t) {
          V(g, g_W_[l]).noalias() += (2.0f * s_.lambda_dr) * (V(th, rs_W_[l], t) * S.transpose());
          V(g, rs_W_[l], t).noalias() += (2.0f * s_.lambda_dr) * (Wg * S);
        }
    }
  }
  const CMapM gout = V(th, gout_W_);
  std::vector<float> ip(T);
  float ip_sum = 0;
  for (int t = 0; t < T; ++t) {
    ip[t] = V(th, rout_W_, t).bottomRows(h).col(0).dot(gout.col(0));
    ip_sum += ip[t];
    if (s_.per_task_dr) dr += ip[t] * ip[t];
  }
  if (!s_.per_task_dr) dr += ip_sum * ip_sum;
  if (g)
    for (int t = 0; t < T; ++t) {
      const float coef = 2.0f * s_.lambda_dr * (s_.per_task_dr ? ip[t] : ip_sum);
      V(g, rout_W_, t).bottomRows(h) += coef * gout;
      V(g, gout_W_) += coef * V(th, rout_W_, t).bottomRows(h);
    }
  if (terms) {
    terms->imp = imp;
    terms->dr = dr;
  }
  return s_.lambda_imp * imp + s_.lambda_dr * dr;
}

float Step2Net::loss(const float* th, float* g, const std::vector<TaskData>& batch, Step2Terms* terms) {
  const View V{layout_};
  const int h = s_.width, L = s_.depth, T = s_.T;
  if (static_cast<int>(batch.size()) != T) throw std::invalid_argument("Step2Net: one batch per task");
  if (g) std::fill(g, g + layout_.size(), 0.0f);
  float integ = 0, orth = 0;
  for (int t = 0; t < T; ++t) {
    Cache& c = cache_[t];
    const TaskData& d = batch[t];
    forward(th, t, d, c);
    const float n = static_cast<float>(d.y.size());
    const Vec res = c.yhat - d.y;
    integ += res.squaredNorm() / n;
    const Mat& fc = c.ac[L - 1];
    const Mat& fu = c.au[L - 1];
    const Mat O = fc.transpose() * fu;  // R_orth: ||F_c' F_u||_F^2
    orth += O.squaredNorm();
    if (!g) continue;
    const Vec dy = (2.0f / n) * res;
    const CMapM rout = V(th, rout_W_, t), gout = V(th, gout_W_);
    V(g, rout_W_, t).topRows(h).col(0).noalias() += c.hr[L - 1].transpose() * dy;
    const Vec ho_dy = c.ho[L - 1].transpose() * dy;
    V(g, rout_W_, t).bottomRows(h).col(0) += ho_dy;
    V(g, gout_W_).col(0) += ho_dy;
    V(g, rout_b_, t)(0, 0) += dy.sum();
    V(g, gout_b_)(0, 0) += dy.sum();
    Mat dhr = dy * rout.topRows(h).col(0).transpose();
    Mat dho = dy * (rout.bottomRows(h).col(0) + gout.col(0)).transpose();
    for (int l = L - 1; l >= 1; --l) {
      relu_grad(dhr, c.hr[l]);
      relu_grad(dho, c.ho[l]);
      V(g, r_W_[l], t).noalias() += c.hr[l - 1].transpose() * dhr;
      V(g, rs_W_[l], t).noalias() += c.ho[l - 1].transpose() * dhr;
      V(g, r_b_[l], t) += dhr.colwise().sum();
      V(g, g_W_[l]).noalias() += c.ho[l - 1].transpose() * dho;
      V(g, g_b_[l]) += dho.colwise().sum();
      Mat dho_prev = dho * V(th, g_W_[l]).transpose();
      dho_prev.noalias() += dhr * V(th, rs_W_[l], t).transpose();
      Mat dhr_prev = dhr * V(th, r_W_[l], t).transpose();
      dho.swap(dho_prev);
      dhr.swap(dhr_prev);
    }
    relu_grad(dhr, c.hr[0]);
    relu_grad(dho, c.ho[0]);
    V(g, r_W_[0], t).noalias() += c.z.transpose() * dhr;
    V(g, r_b_[0], t) += dhr.colwise().sum();
    V(g, g_W_[0]).noalias() += c.z.transpose() * dho;
    V(g, g_b_[0]) += dho.colwise().sum();
    Mat dz = dhr * V(th, r_W_[0], t).transpose();
    dz.noalias() += dho * V(th, g_W_[0]).transpose();
    Mat dfu = dz.leftCols(h), dfc = dz.rightCols(h);
    dfc.noalias() += (2.0f * s_.lambda_orth) * (fu * O.transpose());
    dfu.noalias() += (2.0f * s_.lambda_orth) * (fc * O);
    mlp_backward(V, th, g, enc_u_, t, d.xf, c.au, dfu, nullptr);
    mlp_backward(V, th, g, enc_c_, 0, d.x0, c.ac, dfc, nullptr);
  }
  const float reg = regularisers(th, g, terms);
  if (terms) {
    terms->integ = integ;
    terms->orth = orth;
  }
  return integ + s_.lambda_orth * orth + reg;
}

double Step2Net::val_loss(const float* th, const std::vector<TaskData>& val) {
  // Residuals in float32 (the network's precision), their squares summed in float64: the early-
  // stopping criterion does not depend on the vector width's summation order beyond the residuals.
  double total = 0;
  for (int t = 0; t < s_.T; ++t) {
    forward(th, t, val[t], cache_[t]);
    total += (cache_[t].yhat - val[t].y).cast<double>().squaredNorm() / static_cast<double>(val[t].y.size());
  }
  return total;
}

// ---------------------------------------------------------------------------------- HBI
void HBIData::prepare() {
  x0.resize(x0t.rows() + x0m.rows(), x0t.cols());
  x0.topRows(x0t.rows()) = x0t;
  x0.bottomRows(x0m.rows()) = x0m;
}

HBINet::HBINet(const HBISpec& s) : s_(s) {
  if (s.width < 1 || s.depth < 1 || s.p0 < 1 || s.ps < 1) throw std::invalid_argument("HBINet: invalid sizes");
  if (s.orth_power != 1 && s.orth_power != 2) throw std::invalid_argument("HBINet: orth_power must be 1 or 2");
  const int w = s.width;
  const int D = s.depth;
  Ec_ = add_mlp(layout_, "Ec", s.p0, w, w, D);
  if (s.heterogeneous) {
    Et_ = add_mlp(layout_, "Et", s.p0, w, w, D);
    Em_ = add_mlp(layout_, "Em", s.p0, w, w, D);
    D_ = add_mlp(layout_, "D", 2 * w, s.p0, s.p0, D);
  }
  G_ = add_mlp(layout_, "G", w, w, s.ps, D);
}

float HBINet::loss(const float* th, float* g, const HBIData& d, HBITerms* terms) {
  const View V{layout_};
  if (g) std::fill(g, g + layout_.size(), 0.0f);
  const int w = s_.width;
  const Eigen::Index nt = d.x0t.rows(), nm = d.x0m.rows();
  if (!s_.heterogeneous) {
    mlp_forward(V, th, Ec_, 0, d.x0t, a_c_);
    mlp_forward(V, th, G_, 0, a_c_.back(), a_g_);
    const Mat res = a_g_.back() - d.xst;
    const float scale = 1.0f / static_cast<float>(res.size());
    const float pre = res.squaredNorm() * scale;
    if (terms) *terms = {pre, 0, 0};
    if (g) {
      Mat dg = (2.0f * scale) * res, dfc;
      mlp_backward(V, th, g, G_, 0, a_c_.back(), a_g_, dg, &dfc);
      mlp_backward(V, th, g, Ec_, 0, d.x0t, a_c_, dfc, nullptr);
    }
    return pre;
  }
  mlp_forward(V, th, Ec_, 0, d.x0, a_c_);
  mlp_forward(V, th, Et_, 0, d.x0t, a_t_);
  mlp_forward(V, th, Em_, 0, d.x0m, a_m_);
  const Mat& fc = a_c_.back();
  dec_in_.resize(nt + nm, 2 * w);
  dec_in_.leftCols(w) = fc;
  dec_in_.rightCols(w).topRows(nt) = a_t_.back();
  dec_in_.rightCols(w).bottomRows(nm) = a_m_.back();
  mlp_forward(V, th, D_, 0, dec_in_, a_d_);
  mlp_forward(V, th, G_, 0, fc.topRows(nt), a_g_);
  const Mat res_g = a_g_.back() - d.xst;
  const Mat res_d = a_d_.back() - d.x0;
  const float sg = 1.0f / static_cast<float>(res_g.size());
  const float st = 1.0f / static_cast<float>(nt * d.x0.cols()), sm = 1.0f / static_cast<float>(nm * d.x0.cols());
  const float pre = res_g.squaredNorm() * sg;
  const float recon = res_d.topRows(nt).squaredNorm() * st + res_d.bottomRows(nm).squaredNorm() * sm;
  const Mat Ot = fc.topRows(nt).transpose() * a_t_.back();
  const Mat Om = fc.bottomRows(nm).transpose() * a_m_.back();
  float ot = Ot.squaredNorm(), om = Om.squaredNorm(), ct = 1.0f, cm = 1.0f;
  if (s_.orth_power == 1) {  // the authors' unsquared norm, smoothed at 0
    ot = std::sqrt(ot + 1e-12f);
    om = std::sqrt(om + 1e-12f);
    ct = 0.5f / ot;
    cm = 0.5f / om;
  }
  if (terms) *terms = {pre, recon, ot + om};
  if (g) {
    Mat dd(res_d.rows(), res_d.cols());
    dd.topRows(nt) = (2.0f * st) * res_d.topRows(nt);
    dd.bottomRows(nm) = (2.0f * sm) * res_d.bottomRows(nm);
    Mat din;
    mlp_backward(V, th, g, D_, 0, dec_in_, a_d_, dd, &din);
    Mat dgo = (2.0f * sg) * res_g, dfct;
    mlp_backward(V, th, g, G_, 0, fc.topRows(nt), a_g_, dgo, &dfct);
    Mat dfc = din.leftCols(w);
    dfc.topRows(nt) += dfct;
    Mat dft = din.rightCols(w).topRows(nt), dfm = din.rightCols(w).bottomRows(nm);
    const float lt = 2.0f * s_.lambda_orth * ct, lm = 2.0f * s_.lambda_orth * cm;
    dfc.topRows(nt).noalias() += lt * (a_t_.back() * Ot.transpose());
    dfc.bottomRows(nm).noalias() += lm * (a_m_.back() * Om.transpose());
    dft.noalias() += lt * (fc.topRows(nt) * Ot);
    dfm.noalias() += lm * (fc.bottomRows(nm) * Om);
    mlp_backward(V, th, g, Et_, 0, d.x0t, a_t_, dft, nullptr);
    mlp_backward(V, th, g, Em_, 0, d.x0m, a_m_, dfm, nullptr);
    mlp_backward(V, th, g, Ec_, 0, d.x0, a_c_, dfc, nullptr);
  }
  return pre + recon + s_.lambda_orth * (ot + om);
}

Mat HBINet::impute(const float* th, const Mat& x0) {
  const View V{layout_};
  mlp_forward(V, th, Ec_, 0, x0, a_c_);
  mlp_forward(V, th, G_, 0, a_c_.back(), a_g_);
  return a_g_.back();
}

double HBINet::val_loss(const float* th, const HBIData& val) {
  return (impute(th, val.x0t) - val.xst).cast<double>().squaredNorm() / static_cast<double>(val.xst.size());
}

// ---------------------------------------------------------------------------------- training
namespace {

// Mini-batches of every task in lockstep: each epoch shuffles every task and has as many steps
// as the task with the fewest batches (the last batch of a task may be short).
class TaskSampler {
 public:
  explicit TaskSampler(const Step2Problem& p) : p_(p), rng_(p.seed), B_(p.batch_size) {
    const std::size_t T = p.train.size();
    perm_.resize(T);
    batch_.resize(T);
    steps_ = std::numeric_limits<int>::max();
    for (std::size_t t = 0; t < T; ++t) {
      const int n = static_cast<int>(p.train[t].y.size());
      perm_[t].resize(n);
      const int nb = B_ > 0 ? (n + B_ - 1) / B_ : 1;
      steps_ = std::min(steps_, nb);
    }
  }
  template <class Fn>
  void epoch(Fn&& fn) {
    const std::size_t T = p_.train.size();
    for (std::size_t t = 0; t < T; ++t) {
      for (std::size_t i = 0; i < perm_[t].size(); ++i) perm_[t][i] = static_cast<int>(i);
      if (B_ > 0) rng_.shuffle(perm_[t]);
    }
    if (B_ <= 0) {
      fn(p_.train);
      return;
    }
    for (int s = 0; s < steps_; ++s) {
      for (std::size_t t = 0; t < T; ++t) {
        const TaskData& src = p_.train[t];
        const int n = static_cast<int>(perm_[t].size());
        const int lo = s * B_, hi = std::min(n, lo + B_);
        TaskData& b = batch_[t];
        b.x0.resize(hi - lo, src.x0.cols());
        b.xf.resize(hi - lo, src.xf.cols());
        b.y.resize(hi - lo);
        for (int i = lo; i < hi; ++i) {
          const int r = perm_[t][i];
          b.x0.row(i - lo) = src.x0.row(r);
          b.xf.row(i - lo) = src.xf.row(r);
          b.y(i - lo) = src.y(r);
        }
      }
      fn(batch_);
    }
  }

 private:
  const Step2Problem& p_;
  Rng rng_;
  int B_;
  int steps_;
  std::vector<std::vector<int>> perm_;
  std::vector<TaskData> batch_;
};

template <class Net, class Sampler, class Val>
FitResult train_one(Net& net, std::vector<float> theta, Sampler& sampler, const Val& val, const TrainOptions& o) {
  if (theta.size() != net.layout().size()) throw std::invalid_argument("initial parameters do not fit the network");
  FitResult r;
  r.best = theta;
  r.best_loss = std::numeric_limits<double>::infinity();
  std::vector<float> grad(theta.size());
  Adam adam(theta.size());
  int wait = 0;
  for (int epoch = 0; epoch < o.max_epochs; ++epoch) {
    const float lr = o.lr_step > 0 ? o.lr * std::pow(o.lr_gamma, static_cast<float>(epoch / o.lr_step)) : o.lr;
    sampler.epoch([&](const auto& batch) {
      net.loss(theta.data(), grad.data(), batch);
      adam.step(theta, grad, lr);
    });
    r.epochs = epoch + 1;
    const double vl = net.val_loss(theta.data(), val);
    if (vl < r.best_loss) {  // NaN never improves
      r.best_loss = vl;
      r.best_epoch = epoch;
      r.best = theta;
      wait = 0;
    } else if (++wait >= o.patience) {
      break;
    }
  }
  return r;
}

struct FullBatch {
  const HBIData& data;
  template <class Fn>
  void epoch(Fn&& fn) {
    fn(data);
  }
};

template <class Spec, class Problem, class Job>
std::vector<FitResult> run_members(const std::vector<Problem>& problems, const std::vector<Member<Spec>>& members,
                                   int n_threads, Job&& job) {
  for (const auto& m : members)
    if (m.problem < 0 || m.problem >= static_cast<int>(problems.size()))
      throw std::invalid_argument("member refers to a missing problem");
  std::vector<FitResult> out(members.size());
  std::atomic<std::size_t> next{0};
  const int workers = std::max(1, std::min<int>(n_threads, static_cast<int>(members.size())));
  run_on_threads(workers, [&](int) {
    for (std::size_t i; (i = next.fetch_add(1)) < members.size();) out[i] = job(members[i], problems[members[i].problem]);
  });
  return out;
}

}  // namespace

std::vector<FitResult> train_step2(const std::vector<Step2Problem>& problems,
                                   const std::vector<Member<Step2Spec>>& members, const TrainOptions& opt,
                                   int n_threads) {
  return run_members(problems, members, n_threads, [&](const Member<Step2Spec>& m, const Step2Problem& p) {
    Step2Net net(m.spec);
    TaskSampler sampler(p);
    return train_one(net, m.theta, sampler, p.val, opt);
  });
}

std::vector<FitResult> train_hbi(const std::vector<HBIProblem>& problems, const std::vector<Member<HBISpec>>& members,
                                 const TrainOptions& opt, int n_threads) {
  return run_members(problems, members, n_threads, [&](const Member<HBISpec>& m, const HBIProblem& p) {
    HBINet net(m.spec);
    FullBatch sampler{p.train};
    return train_one(net, m.theta, sampler, p.val, opt);
  });
}

}  // namespace hetmtl::blockwise
