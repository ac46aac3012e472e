#include "fusion.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

namespace hetmtl {
namespace fusion {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
// Sites per thread below which a second thread costs more than it saves.
constexpr int kMinSitesPerThread = 2000;

int n_site_chunks(int K, int threads) { return std::max(1, std::min(threads, K / kMinSitesPerThread)); }

// Run fn(chunk, k0, k1) over the n_site_chunks contiguous chunks of 0..K-1, chunk 0 on the calling
// thread. The chunking depends only on (K, threads), so per-chunk partial sums combined in chunk
// order give results that are identical from run to run.
template <class Fn>
void for_site_chunks(int K, int threads, Fn&& fn) {
  const int n = n_site_chunks(K, threads);
  const auto bound = [n, K](int i) { return static_cast<int>(int64_t(K) * i / n); };
  run_on_threads(n, [&](int i) { fn(i, bound(i), bound(i + 1)); });
}
// Centre reported at C = 0 for the group penalties: the C -> 0+ limit, approximated at this C.
constexpr double kTinyC = 1e-8;

MatrixXd sym(const MatrixXd& M) { return 0.5 * (M + M.transpose()); }

bool positive_definite(const MatrixXd& M, std::string* why) {
  if (!M.allFinite()) {
    if (why) *why = "has non-finite entries";
    return false;
  }
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(M, Eigen::EigenvaluesOnly);
  const double lo = es.eigenvalues().minCoeff(), hi = es.eigenvalues().maxCoeff();
  if (!(lo > 1e-14 * std::max(hi, 0.0)) || !(lo > 0.0)) {
    if (why) *why = "is not positive definite (smallest eigenvalue " + std::to_string(lo) + ")";
    return false;
  }
  return true;
}

// Positive definiteness by a Cholesky factorisation (whose factor is kept for solves): the pivots
// must exceed 1e-14 x the largest diagonal entry. Only a failing matrix pays for the eigenvalues
// that the error message reports.
bool positive_definite_llt(const MatrixXd& M, Eigen::LLT<MatrixXd>& llt, std::string* why) {
  if (!M.allFinite()) return positive_definite(M, why);
  llt.compute(M);
  if (llt.info() != Eigen::Success) {
    if (positive_definite(M, why) && why) *why = "is not positive definite (its Cholesky factorisation failed)";
    return false;
  }
  const double lo = llt.matrixLLT().diagonal().array().square().minCoeff();
  if (!(lo > 1e-14 * M.diagonal().maxCoeff())) {
    if (why) *why = "is not positive definite (smallest Cholesky pivot " + std::to_string(lo) + ")";
    return false;
  }
  return true;
}
}  // namespace

Penalty parse_penalty(const std::string& penalty, const std::string& metric) {
  if (penalty == "squared") return Penalty::Squared;
  if (penalty == "group") {
    if (metric == "matched") return Penalty::GroupMatched;
    if (metric == "euclidean") return Penalty::GroupEuclidean;
    throw std::invalid_argument("metric must be 'matched' or 'euclidean', got '" + metric + "'");
  }
  throw std::invalid_argument("penalty must be 'squared' or 'group', got '" + penalty + "'");
}

LossMatrix parse_loss_matrix(const std::string& name) {
  if (name == "vcov") return LossMatrix::Vcov;
  if (name == "jacobian") return LossMatrix::Jacobian;
  if (name == "identity") return LossMatrix::Identity;
  throw std::invalid_argument("loss_matrix must be 'vcov', 'jacobian' or 'identity', got '" + name + "'");
}

SiteMatrices site_matrices(const std::vector<MatrixXd>& J, const std::vector<MatrixXd>& Omega,
                           const VectorXd& n, LossMatrix kind) {
  const int K = static_cast<int>(J.size());
  if (static_cast<int>(Omega.size()) != K || n.size() != K)
    throw std::invalid_argument("J, Omega and n must describe the same number of sites");
  SiteMatrices out;
  out.H.resize(K);
  out.V.resize(K);
  Eigen::LLT<MatrixXd> llt;
  for (int k = 0; k < K; ++k) {
    const int d = static_cast<int>(J[k].rows());
    std::string why;
    if (!(n[k] > 0)) {
      out.bad_site = k;
      out.reason = "n must be positive";
      return out;
    }
    Eigen::PartialPivLU<MatrixXd> lu;
    if (J[k].allFinite()) lu.compute(J[k]);
    if (!J[k].allFinite() || !(lu.rcond() > 1e-12)) {
      out.bad_site = k;
      out.reason = "J is singular or non-finite";
      return out;
    }
    const MatrixXd Jinv = lu.inverse();
    if (!Jinv.allFinite()) {  // an exactly zero pivot can slip past the rcond estimate
      out.bad_site = k;
      out.reason = "J is singular or non-finite";
      return out;
    }
    const MatrixXd Sigma = sym(Jinv * Omega[k] * Jinv.transpose());
    if (!positive_definite_llt(Sigma, llt, &why)) {
      out.bad_site = k;
      out.reason = "the sandwich covariance J^-1 Omega J^-T " + why;
      return out;
    }
    out.V[k] = Sigma / n[k];
    switch (kind) {
      case LossMatrix::Vcov:
        out.H[k] = sym(llt.solve(MatrixXd::Identity(d, d)));
        break;
      case LossMatrix::Jacobian:
        out.H[k] = -sym(J[k]);
        if (!positive_definite_llt(out.H[k], llt, &why)) {
          out.bad_site = k;
          out.reason = "the loss matrix H " + why + " (-sym(J) must be positive definite)";
          return out;
        }
        break;
      case LossMatrix::Identity:
        out.H[k] = MatrixXd::Identity(d, d);
        break;
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------ Problem
Problem::Problem(MatrixXd theta_hat, std::vector<MatrixXd> H, VectorXd w, VectorXd shape)
    : theta_hat_(std::move(theta_hat)), H_(std::move(H)), w_(std::move(w)), shape_(std::move(shape)) {
  const int K = this->K(), d = this->d();
  if (K < 1 || d < 1) throw std::invalid_argument("need at least one site and one coefficient");
  if (static_cast<int>(H_.size()) != K || w_.size() != K || shape_.size() != K)
    throw std::invalid_argument("theta_hat, H, w and shape must describe the same number of sites");
  if (!theta_hat_.allFinite()) throw std::invalid_argument("theta_hat has non-finite entries");
  wH_sum_ = MatrixXd::Zero(d, d);
  for (int k = 0; k < K; ++k) {
    if (H_[k].rows() != d || H_[k].cols() != d)
      throw std::invalid_argument("site " + std::to_string(k) + ": H has the wrong shape");
    H_[k] = sym(H_[k]);
    // Cholesky check (cheaper than an eigen-decomposition for large K)
    Eigen::LLT<MatrixXd> llt(H_[k]);
    bool pd = H_[k].allFinite() && llt.info() == Eigen::Success;
    if (pd) {
      const VectorXd L = llt.matrixLLT().diagonal();
      pd = L.minCoeff() > 1e-7 * L.maxCoeff() && L.minCoeff() > 0.0;
    }
    if (!pd) throw std::invalid_argument("site " + std::to_string(k) + ": H is not positive definite");
    if (!(w_[k] > 0) || !std::isfinite(w_[k]))
      throw std::invalid_argument("site " + std::to_string(k) + ": weight must be positive and finite");
    if (!(shape_[k] > 0) || !std::isfinite(shape_[k]))
      throw std::invalid_argument("site " + std::to_string(k) + ": lambda shape must be positive and finite");
    wH_sum_ += w_[k] * H_[k];
  }
}

namespace {
// Eigen-decompositions of every H_k (fixed-size solver for small d: no allocation per site).
template <int D>
void eigen_all(const std::vector<MatrixXd>& H, MatrixXd& evec, MatrixXd& eval, int k0, int k1) {
  using Mat = Eigen::Matrix<double, D, D>;
  Eigen::SelfAdjointEigenSolver<Mat> es(static_cast<int>(H[0].rows()));
  for (int k = k0; k < k1; ++k) {
    es.compute(Mat(H[k]));
    const int d = static_cast<int>(eval.rows());
    evec.middleCols(ptrdiff_t(k) * d, d) = es.eigenvectors();
    eval.col(k) = es.eigenvalues();
  }
}
}  // namespace

void Problem::ensure_eigen(int threads) const {
  std::call_once(eig_once_, [this, threads]() {
    const int K = this->K(), d = this->d();
    evec_.resize(d, ptrdiff_t(d) * K);
    eval_.resize(d, K);
    for_site_chunks(K, threads, [&](int, int k0, int k1) {
      switch (d) {
        case 1: eigen_all<1>(H_, evec_, eval_, k0, k1); break;
        case 2: eigen_all<2>(H_, evec_, eval_, k0, k1); break;
        case 3: eigen_all<3>(H_, evec_, eval_, k0, k1); break;
        case 4: eigen_all<4>(H_, evec_, eval_, k0, k1); break;
        case 5: eigen_all<5>(H_, evec_, eval_, k0, k1); break;
        case 6: eigen_all<6>(H_, evec_, eval_, k0, k1); break;
        case 7: eigen_all<7>(H_, evec_, eval_, k0, k1); break;
        case 8: eigen_all<8>(H_, evec_, eval_, k0, k1); break;
        default: eigen_all<Eigen::Dynamic>(H_, evec_, eval_, k0, k1); break;
      }
    });
  });
}

VectorXd Problem::gls_centre(const MatrixXd& th) const {
  VectorXd rhs = VectorXd::Zero(d());
  for (int k = 0; k < K(); ++k) rhs.noalias() += w_[k] * (H_[k] * th.col(k));
  return wH_sum_.llt().solve(rhs);
}

Solution Problem::pooled(const MatrixXd& th) const {
  Solution s;
  s.centre = gls_centre(th);
  s.theta = s.centre.replicate(1, K());
  s.fused.assign(K(), 1);
  s.objective = 0.0;
  for (int k = 0; k < K(); ++k) {
    const VectorXd e = s.centre - th.col(k);
    s.objective += w_[k] * 0.5 * e.dot(H_[k] * e);
  }
  return s;
}

Solution Problem::unpooled(const MatrixXd& th, Penalty pen, const Options& opt) const {
  Solution s;
  if (pen == Penalty::Squared) {
    // C -> 0+: B_k ~ 2 lambda_k I, so the centre tends to the shape-weighted mean.
    VectorXd num = VectorXd::Zero(d());
    double den = 0.0;
    for (int k = 0; k < K(); ++k) {
      num += w_[k] * shape_[k] * th.col(k);
      den += w_[k] * shape_[k];
    }
    s.centre = num / den;
  } else {
    // C -> 0+: a weighted geometric median (in the penalty's metric), approximated at tiny C.
    Solution t = solve_group(th, kTinyC, pen, nullptr, opt, nullptr);
    s.centre = t.centre;
    s.iterations = t.iterations;
    s.converged = t.converged;
  }
  s.theta = th;
  s.fused.assign(K(), 0);
  s.objective = 0.0;
  return s;
}

Solution Problem::solve(double C, Penalty pen, const VectorXd* start, const Options& opt) const {
  return solve_at(theta_hat_, C, pen, start, opt);
}

Solution Problem::solve_at(const MatrixXd& th, double C, Penalty pen, const VectorXd* start,
                           const Options& opt, std::vector<double>* rho_cache) const {
  if (th.rows() != d() || th.cols() != K()) throw std::invalid_argument("theta_hat has the wrong shape");
  if (std::isnan(C) || C < 0) throw std::invalid_argument("C must be >= 0 (or +inf)");
  if (std::isinf(C)) return pooled(th);
  if (C == 0.0) return unpooled(th, pen, opt);
  if (pen == Penalty::Squared) {
    ensure_eigen(opt.threads);
    return solve_squared(th, C);
  }
  return solve_group(th, C, pen, start, opt, rho_cache);
}

Solution Problem::solve_squared(const MatrixXd& th, double C) const {
  ensure_eigen();
  switch (d()) {
    case 1: return solve_squared_t<1>(th, C);
    case 2: return solve_squared_t<2>(th, C);
    case 3: return solve_squared_t<3>(th, C);
    case 4: return solve_squared_t<4>(th, C);
    case 5: return solve_squared_t<5>(th, C);
    case 6: return solve_squared_t<6>(th, C);
    case 7: return solve_squared_t<7>(th, C);
    case 8: return solve_squared_t<8>(th, C);
    default: return solve_squared_t<Eigen::Dynamic>(th, C);
  }
}

template <int D>
Solution Problem::solve_squared_t(const MatrixXd& th, double C) const {
  // In H_k's eigenbasis (H = Q diag(h) Q'): P_k = Q diag(h/(h + 2 lam)) Q' and
  // B_k = 2 lam P_k = Q diag(2 lam h / (h + 2 lam)) Q'.
  using Vec = Eigen::Matrix<double, D, 1>;
  using Mat = Eigen::Matrix<double, D, D>;
  const int K = this->K(), d = this->d();
  Mat Bsum = Mat::Zero(d, d);
  Vec rhs = Vec::Zero(d), t(d), bdiag(d);
  for (int k = 0; k < K; ++k) {
    const double lam = C * shape_[k];
    Eigen::Map<const Mat> Q(evec_.data() + ptrdiff_t(k) * d * d, d, d);
    for (int i = 0; i < d; ++i) {
      const double h = eval_(i, k);
      bdiag[i] = w_[k] * 2.0 * lam * h / (h + 2.0 * lam);
    }
    Bsum.noalias() += Q * bdiag.asDiagonal() * Q.transpose();
    t.noalias() = Q.transpose() * th.col(k);
    rhs.noalias() += Q * bdiag.cwiseProduct(t);
  }
  Solution s;
  const Vec centre = Bsum.llt().solve(rhs);
  s.centre = centre;
  s.theta.resize(d, K);
  s.fused.assign(K, 0);
  Vec z(d), u(d);
  for (int k = 0; k < K; ++k) {
    const double lam = C * shape_[k];
    Eigen::Map<const Mat> Q(evec_.data() + ptrdiff_t(k) * d * d, d, d);
    Eigen::Map<const Mat> H(H_[k].data(), d, d);
    z = th.col(k) - centre;
    t.noalias() = Q.transpose() * z;
    for (int i = 0; i < d; ++i) t[i] *= eval_(i, k) / (eval_(i, k) + 2.0 * lam);
    u.noalias() = Q * t;  // theta_k - centre = P_k z
    s.theta.col(k) = centre + u;
    z = u - z;  // theta_k - that_k
    s.objective += w_[k] * (0.5 * z.dot(H * z) + lam * u.squaredNorm());
  }
  return s;
}

double Problem::profile(const MatrixXd& th, const VectorXd& c, double C, Penalty pen, VectorXd* grad,
                        MatrixXd* newton, MatrixXd* major, Solution* sol, double* rho, int threads) const {
  const int K = this->K(), d = this->d();
  if (sol) {
    sol->theta.resize(d, K);
    sol->fused.assign(K, 0);
    sol->centre = c;
  }
  const auto range = [&](int k0, int k1, VectorXd* g, MatrixXd* N, MatrixXd* M) {
    switch (d) {
      case 1: return profile_t<1>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 2: return profile_t<2>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 3: return profile_t<3>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 4: return profile_t<4>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 5: return profile_t<5>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 6: return profile_t<6>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 7: return profile_t<7>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      case 8: return profile_t<8>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
      default: return profile_t<Eigen::Dynamic>(th, c, C, pen, g, N, M, sol, rho, k0, k1);
    }
  };
  // Euclidean: the majoriser sum_k w_k H_k does not depend on c.
  MatrixXd* major_sum = pen == Penalty::GroupEuclidean ? nullptr : major;
  double F;
  const int n = n_site_chunks(K, threads);
  if (n == 1) {
    F = range(0, K, grad, newton, major_sum);
  } else {
    // per-chunk partial sums, combined in chunk order (deterministic for a given thread count)
    std::vector<double> Fs(n, 0.0);
    std::vector<VectorXd> gs(n, VectorXd::Zero(d));
    std::vector<MatrixXd> Ns(n, MatrixXd::Zero(d, d)), Ms(n, MatrixXd::Zero(d, d));
    for_site_chunks(K, threads, [&](int i, int k0, int k1) {
      Fs[i] = range(k0, k1, grad ? &gs[i] : nullptr, newton ? &Ns[i] : nullptr, major_sum ? &Ms[i] : nullptr);
    });
    F = Fs[0];
    if (grad) *grad = gs[0];
    if (newton) *newton = Ns[0];
    if (major_sum) *major_sum = Ms[0];
    for (int i = 1; i < n; ++i) {
      F += Fs[i];
      if (grad) *grad += gs[i];
      if (newton) *newton += Ns[i];
      if (major_sum) *major_sum += Ms[i];
    }
  }
  if (major && !major_sum) *major = wH_sum_;
  return F;
}

template <int D>
double Problem::profile_t(const MatrixXd& th, const VectorXd& c_in, double C, Penalty pen, VectorXd* grad_out,
                          MatrixXd* newton_out, MatrixXd* major_out, Solution* sol, double* rho_cache,
                          int k_begin, int k_end) const {
  // Sums over sites k_begin..k_end-1 (sol already sized by the caller; each site writes only its
  // own column / radius, so disjoint ranges can run concurrently).
  // Allocation-free inner loop: every temporary is a fixed-size buffer (for d <= 8).
  using Vec = Eigen::Matrix<double, D, 1>;
  using Mat = Eigen::Matrix<double, D, D>;
  const int d = this->d();
  double F = 0.0;
  const Vec c = c_in;
  Vec g_acc = Vec::Zero(d);
  Mat N_acc = Mat::Zero(d, d), M_acc = Mat::Zero(d, d);
  Vec* grad = grad_out ? &g_acc : nullptr;
  Mat* newton = newton_out ? &N_acc : nullptr;
  Mat* major = major_out ? &M_acc : nullptr;
  Vec z(d), Hz(d), zt(d), a(d), ut(d), et(d), p(d), uh(d), h(d);
  Mat tmp(d, d);
  // A site inside its threshold is fused: θ_k = c, loss ½ z'Hz (z = θ̂_k − c), quadratic pieces.
  const auto add_fused = [&](int k, double wk, double zHz, const Eigen::Map<const Mat>& H) {
    F += wk * 0.5 * zHz;
    if (grad) grad->noalias() -= wk * Hz;
    if (newton) newton->noalias() += wk * H;
    if (major) major->noalias() += wk * H;
    if (sol) {
      sol->theta.col(k) = c;
      sol->fused[k] = 1;
    }
  };
  for (int k = k_begin; k < k_end; ++k) {
    const double lam = C * shape_[k], wk = w_[k];
    Eigen::Map<const Mat> H(H_[k].data(), d, d);
    z.noalias() = th.col(k) - c;
    if (pen == Penalty::GroupMatched) {
      Hz.noalias() = H * z;
      const double q = std::max(z.dot(Hz), 0.0), r = std::sqrt(q);
      if (r <= lam) {
        add_fused(k, wk, q, H);
      } else {
        const double f = lam / r;
        F += wk * (lam * r - 0.5 * lam * lam);
        if (grad) grad->noalias() -= (wk * f) * Hz;
        if (newton) {
          newton->noalias() += (wk * f) * H;
          newton->noalias() -= (wk * f / q) * Hz * Hz.transpose();
        }
        if (major) major->noalias() += (wk * f) * H;
        if (sol) sol->theta.col(k).noalias() = c + (1.0 - f) * z;
      }
      continue;
    }
    // GroupEuclidean: the exact per-site minimiser from H's eigen-decomposition H = Q diag(h) Q'
    // (computed once per problem). With z~ = Q'z and a = h * z~ (so ||Hz|| = ||a||) the site is
    // fused iff ||a|| <= lam.
    Eigen::Map<const Mat> Q(evec_.data() + ptrdiff_t(k) * d * d, d, d);
    h = eval_.col(k);
    zt.noalias() = Q.transpose() * z;
    a = h.cwiseProduct(zt);
    const double an = a.norm();
    if (an <= lam) {
      if (rho_cache) rho_cache[k] = 0.0;
      if (grad) Hz.noalias() = Q * a;
      add_fused(k, wk, zt.dot(a), H);
      continue;
    }
    // Otherwise theta_k = c + u with u = (H + (lam/rho) I)^{-1} H z and rho = ||u|| > 0; in the
    // eigenbasis u_i = rho t_i, t_i(rho) = a_i / (h_i rho + lam) = z~_i / (rho + lam/h_i). rho
    // solves chi(rho) = 1/||t(rho)|| = 1; chi is increasing and concave (the trust-region secular
    // function of More & Sorensen, shifts lam/h_i > 0), so Newton from a lower bound of the root
    // increases monotonically to it without overshooting, quadratically (exact in one step for
    // d = 1). The start is the previous evaluation's radius (rho_cache) if any, else
    // ||z~|| - lam sum_i (z~_i^2 / h_i) / ||z~||^2 (the root's large-rho expansion); from a start
    // right of the root the first step lands left of it, so every iterate is clipped to the lower
    // bound rho_lo = (||a|| - lam) / h_max (from ||t(rho)|| >= ||a|| / (h_max rho + lam)).
    const double hmax = h.maxCoeff();
    const double rho_lo = std::max(0.0, (an - lam) / hmax);
    const double scale0 = lam / hmax;
    double rho;
    if (rho_cache && rho_cache[k] > 0.0) {
      rho = rho_cache[k];
    } else {
      const double zn2 = zt.squaredNorm();
      double m = 0.0;
      for (int i = 0; i < d; ++i) m += zt[i] * zt[i] / h[i];
      rho = std::sqrt(zn2) - lam * m / zn2;
    }
    rho = std::max(rho, rho_lo);
    for (int it = 0; it < 100; ++it) {
      double tn2 = 0.0, sd = 0.0;
      for (int i = 0; i < d; ++i) {
        const double inv = 1.0 / (h[i] * rho + lam);
        const double t2 = a[i] * a[i] * inv * inv;
        tn2 += t2;
        sd += t2 * h[i] * inv;
      }
      const double tn = std::sqrt(tn2);
      const double next = std::max(rho + (1.0 - 1.0 / tn) * tn2 / sd, rho_lo);  // + (1 - chi) / chi'
      const double step = std::abs(next - rho);
      rho = next;
      // quadratic convergence: the next step would be ~ step^2 / scale, below rounding
      if (!(step > 1e-9 * (rho + scale0))) break;
    }
    if (rho_cache) rho_cache[k] = rho;
    double un2 = 0.0;
    for (int i = 0; i < d; ++i) {
      const double den = h[i] * rho + lam;
      ut[i] = a[i] * rho / den;
      // e = u - z without cancellation (u ~ z when lam is small): e_i = -lam z~_i / (h_i rho + lam)
      et[i] = -lam * zt[i] / den;
      un2 += ut[i] * ut[i];
    }
    const double un = std::sqrt(un2);
    F += wk * (0.5 * et.dot(h.cwiseProduct(et)) + lam * un);
    if (grad) grad->noalias() += wk * (Q * h.cwiseProduct(et));
    if (newton && un > 0) {
      // Hessian of the profiled term: H (H + B)^{-1} B with B = s (I - uh uh'), s = lam / ||u||.
      // Sherman-Morrison gives s H R - g v v' with R = (H + s I)^{-1}, v = H R uh and
      // g = s / (1 - s uh'R uh) = s / sum_i uh_i^2 h_i / (h_i + s) (no cancellation); in the
      // eigenbasis s H R = diag(s h / (h + s)).
      const double s = lam / un;
      double den = 0.0;
      for (int i = 0; i < d; ++i) {
        const double uhi = ut[i] / un, inv = 1.0 / (h[i] + s);
        p[i] = s * h[i] * inv;             // diag(s h / (h + s))
        uh[i] = h[i] * uhi * inv;          // v in the eigenbasis
        den += uhi * uhi * h[i] * inv;
      }
      tmp.noalias() = Q * (wk * p).asDiagonal();
      newton->noalias() += tmp * Q.transpose();
      Hz.noalias() = Q * uh;
      newton->noalias() -= (wk * s / den) * Hz * Hz.transpose();
    }
    if (sol) sol->theta.col(k).noalias() = c + Q * ut;
  }
  if (grad_out) *grad_out = g_acc;
  if (newton_out) *newton_out = N_acc;
  if (major_out) *major_out = M_acc;
  return F;
}

Solution Problem::solve_group(const MatrixXd& th, double C, Penalty pen, const VectorXd* start,
                              const Options& opt, std::vector<double>* rho_cache) const {
  if (pen == Penalty::GroupEuclidean) ensure_eigen(opt.threads);
  const int d = this->d();
  VectorXd c = (start && start->size() == d && start->allFinite()) ? *start : gls_centre(th);
  VectorXd g(d), g2(d), g3(d);
  MatrixXd N(d, d), M(d, d), N2(d, d), M2(d, d), N3(d, d), M3(d, d);
  // Euclidean: per-site radii of the last evaluation, warm-starting the next one's secular solves
  std::vector<double> rho_local;
  double* rho = nullptr;
  if (pen == Penalty::GroupEuclidean) {
    std::vector<double>& buf = rho_cache ? *rho_cache : rho_local;
    if (static_cast<int>(buf.size()) != K()) buf.assign(K(), 0.0);
    rho = buf.data();
  }
  // Every evaluation also records the per-site minimisers, so the accepted last one is the answer.
  Solution cur, trial, big;
  double F = profile(th, c, C, pen, &g, &N, &M, &cur, rho, opt.threads);
  bool converged = false;
  int it = 0;
  for (; it < opt.max_iter; ++it) {
    VectorXd step;
    double F_try = kInf;
    VectorXd c_try;
    bool accepted = false;
    const double small = opt.tol * (1.0 + c.norm());
    Eigen::LDLT<MatrixXd> ldlt(N);
    if (ldlt.info() == Eigen::Success && ldlt.isPositive()) {
      const VectorXd dir = -ldlt.solve(g);
      if (dir.allFinite() && ldlt.rcond() > 1e-13 && dir.norm() <= small) {
        // converged: the remaining Newton step is below tolerance (no line search needed; at this
        // scale F differences are rounding noise)
        converged = true;
        ++it;
        break;
      }
      if (dir.allFinite() && ldlt.rcond() > 1e-13) {
        // Newton direction with Armijo backtracking (far from the optimum F is nearly linear
        // in the unfused sites and full Newton steps overshoot).
        const double slope = g.dot(dir), slack = 1e-15 * std::abs(F);
        for (double t = 1.0; t >= 1.0 / 1024.0 && !accepted; t *= 0.5) {
          step = t * dir;
          c_try = c + step;
          F_try = profile(th, c_try, C, pen, &g2, &N2, &M2, &trial, rho, opt.threads);
          accepted = F_try <= F + 1e-4 * t * slope + slack;
        }
      }
    }
    if (!accepted) {
      // Majorise-minimise step (IRLS / preconditioned gradient): F never increases. Where F is
      // nearly piecewise linear (unfused sites, d = 1) these steps are short, so expand them
      // while F keeps decreasing.
      const VectorXd dir = -M.llt().solve(g);
      if (dir.norm() <= small) {
        converged = true;
        ++it;
        break;
      }
      step = dir;
      c_try = c + step;
      F_try = profile(th, c_try, C, pen, &g2, &N2, &M2, &trial, rho, opt.threads);
      if (!(F_try < F)) {
        // the MM step decreases F in exact arithmetic: no decrease means F is at its rounding
        // floor (large K), so c is optimal to machine precision
        converged = true;
        ++it;
        break;
      }
      for (double t = 2.0; t <= 1048576.0; t *= 2.0) {
        const VectorXd c_big = c + t * dir;
        const double F_big = profile(th, c_big, C, pen, &g3, &N3, &M3, &big, rho, opt.threads);
        if (!(F_big < F_try)) break;
        step = t * dir;
        c_try = c_big;
        F_try = F_big;
        g2.swap(g3);
        N2.swap(N3);
        M2.swap(M3);
        std::swap(trial, big);
      }
    }
    c = c_try;
    F = F_try;
    g.swap(g2);
    N.swap(N2);
    M.swap(M2);
    std::swap(cur, trial);
    if (step.norm() <= opt.tol * (1.0 + c.norm())) {
      converged = true;
      ++it;
      break;
    }
  }
  cur.objective = F;
  cur.iterations = it;
  cur.converged = converged;
  return cur;
}

std::vector<Solution> Problem::path(const std::vector<double>& C_grid, Penalty pen, const Options& opt) const {
  std::vector<Solution> out;
  out.reserve(C_grid.size());
  VectorXd start;
  std::vector<double> rho_cache;
  for (double C : C_grid) {
    out.push_back(solve_at(theta_hat_, C, pen, start.size() ? &start : nullptr, opt, &rho_cache));
    if (C > 0 && std::isfinite(C)) start = out.back().centre;
  }
  return out;
}

std::vector<double> Problem::path_losses(const std::vector<double>& C_grid, Penalty pen,
                                         const std::vector<MatrixXd>& A, const MatrixXd& b,
                                         const VectorXd& c, const VectorXd& lw, const Options& opt) const {
  const int K = this->K();
  if (static_cast<int>(A.size()) != K || b.cols() != K || b.rows() != d() || c.size() != K || lw.size() != K)
    throw std::invalid_argument("held-out loss coefficients have the wrong shape");
  std::vector<double> out;
  out.reserve(C_grid.size());
  VectorXd start;
  std::vector<double> rho_cache;
  for (double C : C_grid) {
    Solution s;
    if (C == 0.0) {
      s.theta = theta_hat_;  // the centre is irrelevant for the held-out loss
    } else {
      s = solve_at(theta_hat_, C, pen, start.size() ? &start : nullptr, opt, &rho_cache);
      if (std::isfinite(C)) start = s.centre;
    }
    double loss = 0.0;
    for (int k = 0; k < K; ++k) {
      const auto t = s.theta.col(k);
      loss += lw[k] * (c[k] - 2.0 * b.col(k).dot(t) + t.dot(A[k] * t));
    }
    out.push_back(loss);
  }
  return out;
}

double Problem::objective(const MatrixXd& theta, const VectorXd& centre, double C, Penalty pen) const {
  if (theta.rows() != d() || theta.cols() != K() || centre.size() != d())
    throw std::invalid_argument("theta / centre have the wrong shape");
  double F = 0.0;
  for (int k = 0; k < K(); ++k) {
    const VectorXd e = theta.col(k) - theta_hat_.col(k);
    const VectorXd v = theta.col(k) - centre;
    const double lam = C * shape_[k];
    double pen_k = 0.0;
    if (pen == Penalty::Squared) pen_k = lam * v.squaredNorm();
    else if (pen == Penalty::GroupMatched) pen_k = lam * std::sqrt(std::max(v.dot(H_[k] * v), 0.0));
    else pen_k = lam * v.norm();
    F += w_[k] * (0.5 * e.dot(H_[k] * e) + pen_k);
  }
  return F;
}

void Problem::squared_map(double C, std::vector<MatrixXd>& P, std::vector<MatrixXd>& G) const {
  const int K = this->K(), d = this->d();
  const MatrixXd I = MatrixXd::Identity(d, d);
  P.assign(K, MatrixXd::Zero(d, d));
  G.assign(K, MatrixXd::Zero(d, d));
  if (std::isnan(C) || C < 0) throw std::invalid_argument("C must be >= 0 (or +inf)");
  if (C == 0.0) {
    double den = 0.0;
    for (int k = 0; k < K; ++k) den += w_[k] * shape_[k];
    for (int k = 0; k < K; ++k) {
      P[k] = I;
      G[k] = (w_[k] * shape_[k] / den) * I;
    }
    return;
  }
  std::vector<MatrixXd> B(K);
  MatrixXd Bsum = MatrixXd::Zero(d, d);
  for (int k = 0; k < K; ++k) {
    if (std::isinf(C)) {
      B[k] = H_[k];
    } else {
      const double lam = C * shape_[k];
      P[k] = sym((H_[k] + 2.0 * lam * I).llt().solve(H_[k]));
      B[k] = 2.0 * lam * P[k];
    }
    Bsum += w_[k] * B[k];
  }
  Eigen::LLT<MatrixXd> llt(Bsum);
  for (int k = 0; k < K; ++k) G[k] = llt.solve(w_[k] * B[k]);
}

void Problem::squared_covariance(double C, const std::vector<MatrixXd>& V, std::vector<MatrixXd>& cov_sites,
                                 MatrixXd& cov_centre, std::vector<MatrixXd>& cross) const {
  const int K = this->K(), d = this->d();
  if (static_cast<int>(V.size()) != K) throw std::invalid_argument("need one covariance per site");
  std::vector<MatrixXd> P, G;
  squared_map(C, P, G);
  const MatrixXd I = MatrixXd::Identity(d, d);
  cov_centre = MatrixXd::Zero(d, d);
  for (int k = 0; k < K; ++k) cov_centre.noalias() += G[k] * V[k] * G[k].transpose();
  cov_centre = sym(cov_centre);
  cov_sites.resize(K);
  cross.resize(K);
  for (int k = 0; k < K; ++k) {
    // theta_k = P_k that_k + (I - P_k) theta_0 and Cov(that_k, theta_0) = V_k G_k'.
    const MatrixXd R = I - P[k];
    const MatrixXd VG = V[k] * G[k].transpose();
    const MatrixXd PVGR = P[k] * VG * R.transpose();
    cov_sites[k] = sym(P[k] * V[k] * P[k].transpose() + R * cov_centre * R.transpose() + PVGR + PVGR.transpose());
    cross[k] = P[k] * VG + R * cov_centre;
  }
}

Problem::Bootstrap Problem::bootstrap(const std::vector<MatrixXd>& V, double C, Penalty pen, int n_boot,
                                      uint64_t seed, const Options& opt) const {
  const int K = this->K(), d = this->d();
  if (static_cast<int>(V.size()) != K) throw std::invalid_argument("need one covariance per site");
  if (n_boot < 1) throw std::invalid_argument("n_boot must be positive");
  std::vector<MatrixXd> L(K);
  for (int k = 0; k < K; ++k) {
    Eigen::LLT<MatrixXd> llt(sym(V[k]));
    if (llt.info() != Eigen::Success)
      throw std::invalid_argument("site " + std::to_string(k) + ": covariance is not positive definite");
    L[k] = llt.matrixL();
  }
  const Solution base = solve(C, pen, nullptr, opt);
  Bootstrap out;
  out.centre.resize(n_boot, d);
  out.theta.resize(n_boot);
  out.fused_count.assign(K, 0);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  MatrixXd draw(d, K);
  VectorXd eps(d);
  std::vector<double> rho_cache;
  for (int b = 0; b < n_boot; ++b) {
    for (int k = 0; k < K; ++k) {
      for (int i = 0; i < d; ++i) eps[i] = normal(rng);
      draw.col(k) = theta_hat_.col(k) + L[k] * eps;
    }
    const Solution s = solve_at(draw, C, pen, &base.centre, opt, &rho_cache);
    out.centre.row(b) = s.centre.transpose();
    out.theta[b] = s.theta;
    for (int k = 0; k < K; ++k) out.fused_count[k] += s.fused[k];
    if (!s.converged) ++out.n_not_converged;
  }
  return out;
}

}  // namespace fusion
}  // namespace hetmtl
