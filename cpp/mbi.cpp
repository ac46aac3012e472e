#include "mbi.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace hetmtl {
namespace mbi {

namespace {

constexpr double kMachEps = std::numeric_limits<double>::epsilon();
// An eigenvalue within this relative distance of its truncation threshold is on a boundary of
// the piece (the retained count changes across it).
constexpr double kBoundaryBand = 1e-6;

// Numerical rank of a symmetric matrix from its eigenvalues: singular values at least
// dim * machine epsilon * the largest one (the default rule of R's Matrix::rankMatrix).
int numerical_rank(const VectorXd& eigenvalues) {
  const double largest = eigenvalues.cwiseAbs().maxCoeff();
  if (!(largest > 0.0)) return 0;
  const double cut = static_cast<double>(eigenvalues.size()) * kMachEps * largest;
  int rank = 0;
  for (Eigen::Index i = 0; i < eigenvalues.size(); ++i)
    if (std::abs(eigenvalues(i)) >= cut) ++rank;
  return rank;
}

// The retained part of one moment set with covariance `cov` (d x d), in one of two forms:
// the whole set (`whole`, with the Cholesky factor of cov) or its r leading eigenvectors U with
// their eigenvalues (U' cov U = diag(values)); r = 0 keeps nothing. In both forms the retained
// moments' covariance is cheap to invert, and the weight of a moment set depends only on the
// retained subspace (identity or span U).
struct Retained {
  bool whole = false;
  MatrixXd U;        // d x r (eigen form)
  VectorXd values;   // r (eigen form)
  MatrixXd V;        // d x d, every eigenvector (eigen form; ascending eigenvalues)
  VectorXd all_values;  // d, every eigenvalue (eigen form; ascending)
  Eigen::LLT<MatrixXd> llt;  // of cov (whole form)
  int dim = 0;       // number of retained moments

  // Moment rows of X expressed in the retained coordinates.
  MatrixXd reduce(const MatrixXd& X) const { return whole ? X : MatrixXd(U.transpose() * X); }
  // Retained coordinates back to moment coordinates.
  VectorXd lift(const VectorXd& v) const { return whole ? v : VectorXd(U * v); }
  // Cov_r^{-1} x, Cov_r being the retained moments' covariance.
  VectorXd solve(const VectorXd& x) const {
    return whole ? VectorXd(llt.solve(x)) : VectorXd(x.cwiseQuotient(values));
  }
  // L^{-1} X with Cov_r = L L' (so that X' Cov_r^{-1} X = W' W).
  MatrixXd whiten(const MatrixXd& X) const {
    if (whole) return llt.matrixL().solve(X);
    return values.cwiseSqrt().cwiseInverse().asDiagonal() * X;
  }
  // F(cov) = U diag(values)^{-1} U' (cov^{-1} in the whole form), as a d x d matrix.
  MatrixXd F(int d) const {
    if (whole) return llt.solve(MatrixXd::Identity(d, d));
    if (dim == 0) return MatrixXd::Zero(d, d);
    return U * values.cwiseInverse().asDiagonal() * U.transpose();
  }
  // Frechet derivative of F at cov in the symmetric direction Y (F is self-adjoint in the
  // trace inner product, so this is also the adjoint map used by the chain rule). Whole form:
  // -cov^{-1} Y cov^{-1}. Eigen form (Daleckii-Krein): V (H o V'YV) V' with the divided
  // differences H_ij of h(l) = 1/l on the retained eigenvalues and h = 0 on the others; the
  // rotation of the retained subspace enters through the retained-discarded entries.
  MatrixXd dF(const MatrixXd& Y) const {
    const Eigen::Index d = Y.rows();
    if (whole) {
      const MatrixXd left = llt.solve(Y);                 // cov^{-1} Y
      return -llt.solve(left.transpose()).transpose();    // -(cov^{-1} (cov^{-1} Y)')'
    }
    if (dim == 0) return MatrixXd::Zero(d, d);
    MatrixXd M = V.transpose() * Y * V;
    const Eigen::Index first = d - dim;  // retained: indices first..d-1 (ascending order)
    for (Eigen::Index j = 0; j < d; ++j)
      for (Eigen::Index i = 0; i < d; ++i) {
        const bool ri = i >= first, rj = j >= first;
        double h;
        if (ri && rj) {
          h = -1.0 / (all_values(i) * all_values(j));
        } else if (ri) {
          h = 1.0 / (all_values(i) * (all_values(i) - all_values(j)));
        } else if (rj) {
          h = 1.0 / (all_values(j) * (all_values(j) - all_values(i)));
        } else {
          h = 0.0;
        }
        M(i, j) *= h;
      }
    return V * M * V.transpose();
  }
};

// Eigen-form truncation of one moment set from its eigendecomposition (`max_eigen` is the
// running largest eigenvalue, updated as in the reference implementation): every component
// when the set is well conditioned, otherwise the leading ones above the threshold, otherwise
// none.
Retained retained_components(const Eigen::SelfAdjointEigenSolver<MatrixXd>& es, int n_rows,
                             int max_components, double eps3, double& max_eigen) {
  const int d = static_cast<int>(es.eigenvalues().size());
  const VectorXd& values = es.eigenvalues();  // ascending
  const double largest = values(d - 1);
  const double smallest = values(0);
  if (largest > max_eigen) max_eigen = largest;
  const double nr = static_cast<double>(n_rows) * d;
  const double threshold =
      std::max({eps3, max_eigen * 1e-10, values.sum() * std::log(nr) / nr});
  const int rank = numerical_rank(values);
  int r = 0;
  if (smallest > threshold && rank == d && d <= max_components) {
    r = d;
  } else if (largest > threshold && rank > 0 && max_components > 0) {
    int above = 0;
    for (int i = 0; i < d; ++i)
      if (values(i) > threshold) ++above;
    r = std::max(1, std::min({n_rows, above, rank, max_components}));
  }
  Retained out;
  out.dim = r;
  out.V = es.eigenvectors();
  out.all_values = values;
  out.U.resize(d, r);
  out.values.resize(r);
  for (int c = 0; c < r; ++c) {
    out.U.col(c) = es.eigenvectors().col(d - 1 - c);
    out.values(c) = values(d - 1 - c);
  }
  return out;
}

// Per-group state at one beta.
struct GroupState {
  std::vector<int> active;     // copies contributing moments (copy 0 first)
  std::vector<int> offset;     // start of each active copy's moments
  int d1 = 0, d = 0;
  std::vector<VectorXd> resid;  // per active copy
  MatrixXd scores;              // n_k x d: instrument columns times residuals
  VectorXd g;                   // d
  MatrixXd C;                   // d x d
};

}  // namespace

MatrixXd lasso_path(const MatrixXd& X, const VectorXd& y, const VectorXd& lambdas, double thresh,
                    int max_sweeps) {
  const Eigen::Index n = X.rows(), p = X.cols();
  if (y.size() != n) throw std::invalid_argument("lasso_path: y and X differ in rows");
  if (n < 2) throw std::invalid_argument("lasso_path: needs at least two rows");
  const VectorXd xm = X.colwise().mean().transpose();
  const MatrixXd Xc = X.rowwise() - xm.transpose();
  const VectorXd yc = y.array() - y.mean();
  const double inv_n = 1.0 / static_cast<double>(n);
  MatrixXd G = MatrixXd::Zero(p, p);
  G.selfadjointView<Eigen::Lower>().rankUpdate(Xc.transpose(), inv_n);
  G.triangularView<Eigen::StrictlyUpper>() = G.transpose();
  const VectorXd c = inv_n * (Xc.transpose() * yc);
  const double scale = thresh * inv_n * yc.squaredNorm();
  VectorXd beta = VectorXd::Zero(p), q = VectorXd::Zero(p);  // q = G beta
  MatrixXd out(p, lambdas.size());
  std::vector<char> active(p, 0);
  auto update = [&](Eigen::Index j, double lam) {
    const double gjj = G(j, j);
    if (!(gjj > 0.0)) return 0.0;
    const double z = c(j) - q(j) + gjj * beta(j);
    const double b = z > lam ? (z - lam) / gjj : (z < -lam ? (z + lam) / gjj : 0.0);
    const double d = b - beta(j);
    if (d != 0.0) {
      q.noalias() += d * G.col(j);
      beta(j) = b;
      if (b != 0.0) active[j] = 1;
    }
    return gjj * d * d;
  };
  for (Eigen::Index l = 0; l < lambdas.size(); ++l) {
    const double lam = lambdas(l);
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
      double change = 0.0;  // full sweep: may add coordinates to the active set
      for (Eigen::Index j = 0; j < p; ++j) change = std::max(change, update(j, lam));
      if (change < scale) break;
      for (int inner = 0; inner < max_sweeps; ++inner) {  // cycle on the active set only
        double ch = 0.0;
        for (Eigen::Index j = 0; j < p; ++j)
          if (active[j]) ch = std::max(ch, update(j, lam));
        if (ch < scale) break;
      }
    }
    out.col(l) = beta;
  }
  return out;
}

double scad_penalty(double u, double lambda, double a) {
  if (u <= lambda) return lambda * u;
  if (u <= a * lambda) return -(u * u - 2.0 * a * lambda * u + lambda * lambda) / (2.0 * (a - 1.0));
  return (a + 1.0) * lambda * lambda / 2.0;
}

double scad_derivative(double u, double lambda, double a) {
  if (u <= lambda) return lambda;
  if (u <= a * lambda) return (a * lambda - u) / (a - 1.0);
  return 0.0;
}

// Gradient of the penalised objective on the support: grad_j + sign(beta_j) SCAD'(|beta_j|), 0 off
// the support (where the objective is not differentiable). `grad` is the smooth part's gradient
// (Q, plus the anchor term where the solver has one).
static VectorXd support_gradient(const VectorXd& beta, const VectorXd& grad, double lambda, double a) {
  VectorXd r = VectorXd::Zero(beta.size());
  for (Eigen::Index j = 0; j < beta.size(); ++j) {
    if (beta(j) == 0.0) continue;
    r(j) = grad(j);
    if (lambda > 0.0) r(j) += (beta(j) > 0 ? 1.0 : -1.0) * scad_derivative(std::abs(beta(j)), lambda, a);
  }
  return r;
}

Problem::Problem(std::vector<Group> groups, double eps3) : groups_(std::move(groups)), eps3_(eps3) {
  if (groups_.empty()) throw std::invalid_argument("MBI needs at least one group");
  p_ = -1;
  for (std::size_t k = 0; k < groups_.size(); ++k) {
    Group& G = groups_[k];
    const std::string name = "group " + std::to_string(k);
    const Eigen::Index nk = G.y.size();
    if (nk == 0) throw std::invalid_argument(name + " has no rows");
    if (G.copies.empty()) throw std::invalid_argument(name + " has no imputed copy");
    if (G.instruments.size() != G.copies.size() || G.diff_cols.size() != G.copies.size())
      throw std::invalid_argument(name + ": copies, instruments and diff_cols differ in length");
    G.Z.clear();
    G.D.clear();
    G.b.clear();
    for (std::size_t s = 0; s < G.copies.size(); ++s) {
      const MatrixXd& X = G.copies[s];
      if (X.rows() != nk) throw std::invalid_argument(name + ": copy rows differ from y");
      if (p_ < 0) p_ = static_cast<int>(X.cols());
      if (X.cols() != p_) throw std::invalid_argument(name + ": copies differ in column count");
      if (G.instruments[s].empty())
        throw std::invalid_argument(name + ", copy " + std::to_string(s) + ": no instruments");
      MatrixXd Z(nk, G.instruments[s].size());
      for (std::size_t c = 0; c < G.instruments[s].size(); ++c) {
        const int col = G.instruments[s][c];
        if (col < 0 || col >= p_) throw std::invalid_argument(name + ": instrument out of range");
        Z.col(c) = X.col(col);
      }
      for (int col : G.diff_cols[s])
        if (col < 0 || col >= p_) throw std::invalid_argument(name + ": diff column out of range");
      const double inv_n = 1.0 / static_cast<double>(nk);
      G.D.push_back(inv_n * (Z.transpose() * X));
      G.b.push_back(inv_n * (Z.transpose() * G.y));
      G.Z.push_back(std::move(Z));
    }
    n_ += static_cast<int>(nk);
  }
}

Evaluation Problem::evaluate(const VectorXd& beta, bool with_derivatives, bool boundaries) const {
  if (beta.size() != p_) throw std::invalid_argument("beta has the wrong length");
  const int K = n_groups();
  std::vector<GroupState> st(K);
  double max_eigen = 0.0, trace_bound = 0.0;
  // Pass 1: moments and their second-moment matrices.
  for (int k = 0; k < K; ++k) {
    const Group& G = groups_[k];
    GroupState& S = st[k];
    const Eigen::Index nk = G.y.size();
    for (std::size_t s = 0; s < G.copies.size(); ++s) {
      if (s > 0) {
        // A copy whose residuals equal copy 0's (beta is zero wherever they differ) is dropped.
        bool differs = false;
        for (int col : G.diff_cols[s])
          if (beta(col) != 0.0) { differs = true; break; }
        if (!differs) continue;
      }
      S.active.push_back(static_cast<int>(s));
      S.offset.push_back(S.d);
      S.d += static_cast<int>(G.Z[s].cols());
    }
    S.d1 = static_cast<int>(G.Z[0].cols());
    S.scores.resize(nk, S.d);
    for (std::size_t a = 0; a < S.active.size(); ++a) {
      const int s = S.active[a];
      S.resid.push_back(G.y - G.copies[s] * beta);
      S.scores.middleCols(S.offset[a], G.Z[s].cols()) =
          G.Z[s].array().colwise() * S.resid.back().array();
    }
    const double inv_n = 1.0 / static_cast<double>(nk);
    S.g = inv_n * S.scores.colwise().sum().transpose();
    S.C = MatrixXd::Zero(S.d, S.d);
    S.C.selfadjointView<Eigen::Lower>().rankUpdate(S.scores.transpose(), inv_n);
    S.C.triangularView<Eigen::StrictlyUpper>() = S.C.transpose();
    trace_bound = std::max(trace_bound, S.C.trace());
  }
  // The truncation threshold of a moment set is max(eps3, 1e-10 * max_eigen, tr log(nr)/nr),
  // max_eigen being the largest eigenvalue of the groups' second-moment matrices (every set's
  // eigenvalues are at most that: principal blocks and residualised covariances). Since C is
  // positive semi-definite, max_eigen <= trace_bound; where 1e-10 * trace_bound cannot bind, the
  // threshold is known without any eigenvalue, and a well-conditioned set (kept whole) is
  // recognised by one Cholesky factorisation of C - threshold * I. Otherwise, and for sets that
  // are truncated, the eigendecompositions are computed as before.
  bool have_max_eigen = false;
  auto exact_max_eigen = [&]() -> double& {
    if (!have_max_eigen) {
      for (const GroupState& S : st)
        max_eigen = std::max(max_eigen, Eigen::SelfAdjointEigenSolver<MatrixXd>(
                                            S.C, Eigen::EigenvaluesOnly).eigenvalues()(S.d - 1));
      have_max_eigen = true;
    }
    return max_eigen;
  };
  auto components = [&](const MatrixXd& cov, int n_rows, int max_components) -> Retained {
    const int d = static_cast<int>(cov.rows());
    const double nr = static_cast<double>(n_rows) * d;
    const double base = std::max(eps3_, cov.trace() * std::log(nr) / nr);
    const bool floor_binds = 1e-10 * trace_bound > base;
    if (!floor_binds && d <= max_components && !boundaries) {
      // smallest eigenvalue > threshold (full rank follows, as threshold >= 1e-10 * largest)
      MatrixXd shifted = cov;
      shifted.diagonal().array() -= base;
      if (Eigen::LLT<MatrixXd>(shifted).info() == Eigen::Success) {
        Retained whole;
        whole.whole = true;
        whole.dim = d;
        whole.llt.compute(cov);
        return whole;
      }
    }
    double unused = 0.0;
    return retained_components(Eigen::SelfAdjointEigenSolver<MatrixXd>(cov), n_rows,
                               max_components, eps3_, floor_binds ? exact_max_eigen() : unused);
  };
  Evaluation ev;
  ev.n_moments.resize(K);
  ev.n_retained.resize(K);
  if (with_derivatives) {
    ev.grad = VectorXd::Zero(p_);
    ev.grad_fixed_weight = VectorXd::Zero(p_);
    ev.grad_fixed_truncation = VectorXd::Zero(p_);
    ev.gn_hessian = MatrixXd::Zero(p_, p_);
  }
  // Pass 2: truncation, transformed moments, and Q. With R1 the retained part of copy 0's moments
  // g1 and R2 that of the further copies' moments g2 residualised on R1's, g2 - A g1, the
  // transformed moments T g are uncorrelated between the two parts, so their covariance T C T'
  // is block diagonal: blocks R1' C11 R1 and R2' cov2 R2, each inverted through its own form.
  for (int k = 0; k < K; ++k) {
    const Group& G = groups_[k];
    const GroupState& S = st[k];
    const int nk = static_cast<int>(G.y.size());
    const int d1 = S.d1, d2 = S.d - S.d1;
    ev.n_moments[k] = S.d;
    const MatrixXd C11 = S.C.topLeftCorner(d1, d1);
    const Retained R1 = components(C11, nk, nk - 1);
    Retained R2;
    MatrixXd A = MatrixXd::Zero(d2, d1);
    MatrixXd cov2_kept;
    if (d2 > 0) {
      const MatrixXd C21 = S.C.bottomLeftCorner(d2, d1);
      MatrixXd cov2 = S.C.bottomRightCorner(d2, d2);
      if (R1.dim > 0) {
        // A = C21 R1 (R1' C11 R1)^{-1} R1', and cov(g2 - A g1) = C22 - A C21'.
        if (R1.whole) {
          A = R1.llt.solve(C21.transpose()).transpose();
        } else {
          const MatrixXd C21U = C21 * R1.U;
          A = C21U * R1.values.cwiseInverse().asDiagonal() * R1.U.transpose();
        }
        cov2 -= A * C21.transpose();
      }
      cov2 = 0.5 * (cov2 + cov2.transpose());
      R2 = components(cov2, nk, nk - 1 - R1.dim);
      if (boundaries) cov2_kept = cov2;
    }
    const int r = R1.dim + R2.dim;
    ev.n_retained[k] = r;
    if (r == 0) continue;
    // (an empty part contributes nothing: its reduce/solve/lift act on zero-length vectors)
    const VectorXd g1 = S.g.head(d1);
    const VectorXd gs1 = R1.reduce(g1), v1 = R1.solve(gs1);
    const VectorXd gs2 = R2.reduce(S.g.tail(d2) - A * g1), v2 = R2.solve(gs2);
    ev.Q += gs1.dot(v1) + gs2.dot(v2);
    if (!with_derivatives) continue;
    VectorXd u(S.d);  // T' v, v = (T C T')^{-1} T g
    u.tail(d2) = R2.lift(v2);
    u.head(d1) = R1.lift(v1) - A.transpose() * u.tail(d2);
    MatrixXd Dstack(S.d, p_);
    for (std::size_t a = 0; a < S.active.size(); ++a)
      Dstack.middleRows(S.offset[a], G.D[S.active[a]].rows()) = G.D[S.active[a]];
    const VectorXd gfixed = -2.0 * Dstack.transpose() * u;
    ev.grad_fixed_weight += gfixed;
    // Old-style derivative: the truncation T held fixed, C(beta) varying (d/dC = -u u').
    VectorXd agg = VectorXd::Zero(nk);  // a_i = u' z_i
    std::vector<VectorXd> w(S.active.size());
    for (std::size_t a = 0; a < S.active.size(); ++a) {
      const int s = S.active[a];
      w[a] = G.Z[s] * u.segment(S.offset[a], G.Z[s].cols());
      agg += w[a].cwiseProduct(S.resid[a]);
    }
    VectorXd extra = VectorXd::Zero(p_);
    for (std::size_t a = 0; a < S.active.size(); ++a)
      extra += G.copies[S.active[a]].transpose() * agg.cwiseProduct(w[a]);
    ev.grad_fixed_truncation += gfixed + (2.0 / nk) * extra;
    // Exact derivative: dQ/dC = G_C including the movement of the retained eigenvectors.
    // With F1 = F(C11), f1 = F1 g1, A = C21 F1, h = g2 - A g1, cov2 = C22 - C21 F1 C12,
    // f2 = F2(cov2) h, Y2 = DF2[h h'] and Y1 = g1 g1' - (C12 f2 g1' + g1 f2' C21) - C12 Y2 C21:
    // G11 = DF1[Y1], G22 = Y2, G21 = -Y2 C21 F1 - f2 f1' (DF: Frechet derivative of F).
    MatrixXd GC(S.d, S.d);
    {
      const VectorXd f1 = R1.lift(v1);
      if (d2 > 0) {
        const VectorXd h = S.g.tail(d2) - A * g1;
        const VectorXd f2 = R2.lift(v2);
        const MatrixXd C21 = S.C.bottomLeftCorner(d2, d1);
        const MatrixXd Y2 = R2.dF(h * h.transpose());
        const MatrixXd C12f2g1 = C21.transpose() * f2 * g1.transpose();
        const MatrixXd Y1 = g1 * g1.transpose() - C12f2g1 - C12f2g1.transpose() -
                            C21.transpose() * Y2 * C21;
        GC.topLeftCorner(d1, d1) = R1.dF(0.5 * (Y1 + Y1.transpose()));
        GC.bottomRightCorner(d2, d2) = Y2;
        const MatrixXd G21 = -Y2 * A - f2 * f1.transpose();  // A = C21 F1
        GC.bottomLeftCorner(d2, d1) = G21;
        GC.topRightCorner(d1, d2) = G21.transpose();
      } else {
        GC = R1.dF(g1 * g1.transpose());
      }
    }
    // sum_j <G_C, dC/dbeta_j> = -(2/n) sum_i z_i' G_C w_ij, w_ij stacking Z_s[i,:] X_s[i,j].
    auto through_C = [&](const MatrixXd& GCm) {  // sum_j <GCm, dC/dbeta_j>
      const MatrixXd M = S.scores * GCm;  // n_k x d
      VectorXd out = VectorXd::Zero(p_);
      for (std::size_t a = 0; a < S.active.size(); ++a) {
        const int s = S.active[a];
        const VectorXd as =
            M.middleCols(S.offset[a], G.Z[s].cols()).cwiseProduct(G.Z[s]).rowwise().sum();
        out -= G.copies[s].transpose() * as;
      }
      return VectorXd((2.0 / nk) * out);
    };
    ev.grad += gfixed + through_C(GC);
    if (boundaries) {
      // Truncation boundaries: a retained-count change happens where an eigenvalue of a moment
      // set crosses its threshold kappa tr(set) (the trace term of the threshold). For the
      // largest discarded eigenvalue near it the piece is {c <= 0}, c = lambda - kappa tr; for
      // the smallest retained one {-c <= 0}. Record the outward normals grad(+-c).
      auto add_boundaries = [&](const Retained& R, const MatrixXd& cov, bool second) {
        if (R.whole || R.all_values.size() == 0) return;
        const int d = static_cast<int>(R.all_values.size());
        const double nr = static_cast<double>(nk) * d;
        const double kappa = std::log(nr) / nr;
        const double thr = std::max(eps3_, cov.trace() * kappa);
        const bool trace_binds = cov.trace() * kappa >= eps3_;
        for (int side = 0; side < 2; ++side) {
          const int i = side == 0 ? d - R.dim - 1 : d - R.dim;  // largest discarded, smallest kept
          if (i < 0 || i >= d) continue;
          if (std::abs(R.all_values(i) - thr) > kBoundaryBand * thr) continue;
          MatrixXd Y = R.V.col(i) * R.V.col(i).transpose();
          if (trace_binds) Y.diagonal().array() -= kappa;
          MatrixXd GCb = MatrixXd::Zero(S.d, S.d);
          if (!second) {
            GCb.topLeftCorner(d1, d1) = Y;
          } else {
            const MatrixXd C21 = S.C.bottomLeftCorner(d2, d1);
            GCb.bottomRightCorner(d2, d2) = Y;
            const MatrixXd G21 = -Y * A;
            GCb.bottomLeftCorner(d2, d1) = G21;
            GCb.topRightCorner(d1, d2) = G21.transpose();
            const MatrixXd inner = -C21.transpose() * Y * C21;
            GCb.topLeftCorner(d1, d1) = R1.dF(0.5 * (inner + inner.transpose()));
          }
          const VectorXd gc = through_C(GCb);
          ev.boundary_normals.push_back(side == 0 ? gc : VectorXd(-gc));
        }
      };
      add_boundaries(R1, C11, false);
      if (d2 > 0) add_boundaries(R2, cov2_kept, true);
    }
    // Gauss-Newton term 2 (T D)' (T C T')^{-1} (T D), one block at a time.
    auto add_gram = [&](const MatrixXd& W) {
      ev.gn_hessian.selfadjointView<Eigen::Lower>().rankUpdate(W.transpose(), 2.0);
    };
    if (R1.dim > 0) add_gram(R1.whiten(R1.reduce(Dstack.topRows(d1))));
    if (R2.dim > 0) add_gram(R2.whiten(R2.reduce(Dstack.bottomRows(d2) - A * Dstack.topRows(d1))));
  }
  if (with_derivatives)
    ev.gn_hessian.triangularView<Eigen::StrictlyUpper>() = ev.gn_hessian.transpose();
  return ev;
}

double Problem::objective(const VectorXd& beta, double lambda, double a) const {
  double pen = 0.0;
  if (lambda > 0.0)
    for (Eigen::Index j = 0; j < beta.size(); ++j) pen += scad_penalty(std::abs(beta(j)), lambda, a);
  return qif(beta) + pen;
}

double Problem::solver_penalty(const VectorXd& beta, double lambda, const PathOptions& opt) const {
  double pen = 0.0;
  if (lambda > 0.0)
    for (Eigen::Index j = 0; j < beta.size(); ++j) pen += scad_penalty(std::abs(beta(j)), lambda, opt.a);
  if (opt.mu > 0.0) pen += 0.5 * opt.mu * (beta - opt.anchor).squaredNorm();
  return pen;
}

double Problem::solver_objective(const VectorXd& beta, double lambda,
                                 const PathOptions& opt) const {
  return qif(beta) + solver_penalty(beta, lambda, opt);
}

double Problem::rss1(const VectorXd& beta) const {
  if (beta.size() != p_) throw std::invalid_argument("beta has the wrong length");
  double total = 0.0;
  for (const Group& G : groups_) {
    double acc = 0.0;
    for (const MatrixXd& X : G.copies) acc += (G.y - X * beta).squaredNorm();
    total += acc / static_cast<double>(G.copies.size());
  }
  return total;
}

double Problem::stationarity_of(const VectorXd& beta, double lambda, const PathOptions& opt,
                                const Evaluation& ev) const {
  // gradient of the solver's objective on the support
  VectorXd r = opt.mu > 0.0
                   ? support_gradient(beta, ev.grad + opt.mu * (beta - opt.anchor), lambda, opt.a)
                   : support_gradient(beta, ev.grad, lambda, opt.a);
  // On a truncation boundary the optimality condition is KKT for the piece: the gradient plus a
  // nonnegative combination of the boundaries' outward normals vanishes (min over mu >= 0 of
  // ||r + sum_k mu_k a_k||, coordinate descent on the convex quadratic).
  const std::size_t K = ev.boundary_normals.size();
  if (K > 0) {
    std::vector<VectorXd> a(K);
    std::vector<double> aa(K);
    for (std::size_t k = 0; k < K; ++k) {
      a[k] = VectorXd::Zero(p_);
      for (int j = 0; j < p_; ++j)
        if (beta(j) != 0.0) a[k](j) = ev.boundary_normals[k](j);
      aa[k] = a[k].squaredNorm();
    }
    std::vector<double> mu(K, 0.0);
    VectorXd res = r;
    for (int sweep = 0; sweep < 200; ++sweep) {
      double change = 0.0;
      for (std::size_t k = 0; k < K; ++k) {
        if (!(aa[k] > 0.0)) continue;
        const double m = std::max(0.0, mu[k] - a[k].dot(res) / aa[k]);
        if (m != mu[k]) {
          res += (m - mu[k]) * a[k];
          change = std::max(change, std::abs(m - mu[k]) * std::sqrt(aa[k]));
          mu[k] = m;
        }
      }
      if (change < 1e-14) break;
    }
    r = res;
  }
  return r.cwiseAbs().maxCoeff();
}

double Problem::stationarity(const VectorXd& beta, double lambda, const PathOptions& opt) const {
  return stationarity_of(beta, lambda, opt, evaluate(beta, true, true));
}

double Problem::lambda_max(const VectorXd& beta_start) const {
  const Evaluation ev = evaluate(beta_start, true);
  return ev.grad_fixed_weight.cwiseAbs().maxCoeff() + 0.5;
}

VectorXd Problem::solve(const VectorXd& start, double lambda, const PathOptions& opt, int* n_iter,
                        bool* converged, const std::vector<char>& frozen, bool lasso_first) const {
  const bool has_frozen = !frozen.empty();
  auto is_frozen = [&](int j) { return has_frozen && frozen[j]; };
  VectorXd beta = start;
  for (int j = 0; j < p_; ++j)
    if (is_frozen(j)) beta(j) = 0.0;
  const bool anchored = opt.mu > 0.0;
  if (anchored && opt.anchor.size() != p_) throw std::invalid_argument("anchor has the wrong length");
  // derivatives at the current point, from the start or an accepted first trial step
  Evaluation next = evaluate(beta, true);
  bool have_next = true;
  double F = next.Q + solver_penalty(beta, lambda, opt);
  *converged = false;
  int it = 0;
  VectorXd weight = VectorXd::Zero(p_);
  double t_start = 1.0;  // first trial step, adapted to the last accepted one
  bool stationary = false;
  // optimality residual on the support (the objective is differentiable there)
  auto support_residual = [&](const VectorXd& b, const VectorXd& grad) {
    return p_ > 0 ? support_gradient(b, grad, lambda, opt.a).cwiseAbs().maxCoeff() : 0.0;
  };
  for (; it < opt.max_iter; ++it) {
    Evaluation ev = have_next ? std::move(next) : evaluate(beta, true);
    have_next = false;
    MatrixXd H = ev.gn_hessian;
    if (anchored) {
      ev.grad += opt.mu * (beta - opt.anchor);
      H.diagonal().array() += opt.mu;
    }
    const double res = support_residual(beta, ev.grad);
    stationary = res <= opt.stat_tol;
    const double damp = 1e-7 * std::max(H.diagonal().maxCoeff(), 1e-12) + 1e-12;
    H.diagonal().array() += damp;
    for (int j = 0; j < p_; ++j)
      weight(j) = lambda > 0.0 ? (lasso_first && it == 0
                                      ? lambda
                                      : scad_derivative(std::abs(beta(j)), lambda, opt.a))
                               : 0.0;
    // Proximal Newton subproblem (SCAD linearised at beta): coordinate descent on
    // grad'(b - beta) + 1/2 (b - beta)' H (b - beta) + sum_j weight_j |b_j|.
    VectorXd b = beta;
    VectorXd Hd = VectorXd::Zero(p_);  // H (b - beta)
    const double cd_tol = 1e-11 * (1.0 + beta.cwiseAbs().maxCoeff());
    for (int sweep = 0; sweep < 200; ++sweep) {
      double max_change = 0.0;
      for (int j = 0; j < p_; ++j) {
        if (is_frozen(j)) continue;
        const double hjj = H(j, j);
        const double c = ev.grad(j) + Hd(j) - hjj * (b(j) - beta(j));
        const double z = beta(j) - c / hjj;
        const double thr = weight(j) / hjj;
        const double bj = z > thr ? z - thr : (z < -thr ? z + thr : 0.0);
        const double delta = bj - b(j);
        if (delta != 0.0) {
          Hd += delta * H.col(j);
          b(j) = bj;
          max_change = std::max(max_change, std::abs(delta));
        }
      }
      if (max_change < cd_tol) break;
    }
    const VectorXd dir = b - beta;
    const double step_size = dir.cwiseAbs().maxCoeff();
    bool support_change = false;
    for (int j = 0; j < p_; ++j)
      if ((b(j) == 0.0) != (beta(j) == 0.0)) support_change = true;
    // Converged: stationary on the support and no coefficient proposed to enter or leave it.
    // (a point that is not stationary keeps taking steps down to the rounding level of beta:
    // with a large curvature a residual above stat_tol can mean a step below tol)
    const double step_floor =
        stationary ? 1e-3 * opt.tol : 1e-14 * (1.0 + beta.cwiseAbs().maxCoeff());
    if ((stationary && !support_change) || step_size < step_floor) {
      *converged = stationary;
      break;
    }
    double decrease = ev.grad.dot(dir);
    for (int j = 0; j < p_; ++j) decrease += weight(j) * (std::abs(b(j)) - std::abs(beta(j)));
    // no descent predicted (a predicted decrease at the rounding level of F still gets a trial
    // step while the point is not stationary: see the residual rule of the line search)
    if (decrease >= 0.0 || (stationary && decrease > -1e-14 * (1.0 + std::abs(F)))) {
      *converged = stationary;
      break;
    }
    double t = t_start;
    bool accepted = false;
    bool first_try = false;
    bool by_residual = false;  // accepted at the rounding level of F on a smaller residual
    VectorXd trial;
    double F_trial = F;
    // Rounding regime: not stationary, but the predicted decrease is at the rounding level of F
    // (a smooth minimum seen through a large curvature). Only the full step is tried there, by
    // the residual rule; elsewhere the usual backtracking down to steps of 0.1 tol.
    const bool rounding = !stationary && decrease > -1e-12 * (1.0 + std::abs(F));
    if (rounding) t = 1.0;
    const double min_trial = rounding ? 0.0 : 0.1 * opt.tol;
    for (int ls = 0; ls < (rounding ? 1 : 60) && t * step_size > min_trial; ++ls) {
      trial = beta + t * dir;
      if (ls == 0) {  // full step usually accepted: its derivatives serve the next iteration
        next = evaluate(trial, true);
        have_next = true;
        F_trial = next.Q + solver_penalty(trial, lambda, opt);
      } else {
        have_next = false;
        F_trial = solver_objective(trial, lambda, opt);
      }
      const double target = F + 1e-4 * t * decrease;
      // the QIF's spurious region (huge residuals shrink Q): never step to a fit worse than
      // the null model's
      if (F_trial <= target && rss1(trial) > opt.rss_cap) {
        have_next = false;
        t *= 0.5;
        continue;
      }
      if (F_trial <= target) {
        accepted = true;
        first_try = ls == 0;
        break;
      }
      // Near a smooth minimum the decrease left (about res^2 / curvature) falls below the
      // rounding of F, so the Armijo test cannot see it: there a full step that keeps F within
      // rounding and lowers the optimality residual is accepted.
      if (ls == 0 && !stationary && F_trial <= F + 1e-13 * (1.0 + std::abs(F))) {
        VectorXd g_trial = next.grad;
        if (anchored) g_trial += opt.mu * (trial - opt.anchor);
        if (support_residual(trial, g_trial) < 0.5 * res) {
          accepted = true;
          by_residual = true;
          break;
        }
      }
      t *= 0.5;
    }
    if (!accepted) {
      // No descent along the direction: a truncation boundary (the retained count changes and
      // Q jumps up across it) or rounding. Stop; converged only if stationary on the piece.
      have_next = false;
      *converged = stationary;
      break;
    }
    // grow the first trial after a step accepted at once; keep it after a backtrack
    t_start = first_try ? std::min(1.0, 2.0 * t) : t;
    const double F_old = F;
    beta = trial;
    F = F_trial;
    // Stalled (the objective no longer decreases meaningfully, typically against a truncation
    // boundary): stop, converged only if stationary on the piece.
    // Stop when stationary and the steps have become small, or when the objective no longer
    // decreases at all (typically against a truncation boundary).
    const bool small = t * step_size < opt.tol || F_old - F <= 1e-10 * (1.0 + std::abs(F));
    const bool stalled = t * step_size < 1e-3 * opt.tol || F_old - F <= 1e-14 * (1.0 + std::abs(F));
    if ((stationary && small) || (stalled && !by_residual)) {
      ++it;
      *converged = stationary;  // of the previous point; the path reports the final residual
      break;
    }
  }
  if (it >= opt.max_iter) *converged = false;
  *n_iter = it;
  return beta;
}

VectorXd Problem::solve_thresholded(const VectorXd& start, double lam, const PathOptions& opt,
                                   int* n_iter, bool* converged,
                                   const std::vector<char>& held, bool lasso_first) const {
  VectorXd beta = solve(start, lam, opt, n_iter, converged, held, lasso_first);
  if (lam > 0.0 && opt.eps1 > 0.0) {
    std::vector<char> frozen = held.empty() ? std::vector<char>(p_, 0) : held;
    bool any = false;
    for (int j = 0; j < p_; ++j)
      if (std::abs(beta(j)) < opt.eps1) {
        frozen[j] = 1;
        if (beta(j) != 0.0) any = true;
      }
    if (any) {
      int more = 0;
      beta = solve(beta, lam, opt, &more, converged, frozen);
      *n_iter += more;
      for (int j = 0; j < p_; ++j)
        if (std::abs(beta(j)) < opt.eps1) beta(j) = 0.0;
    }
  }
  return beta;
}

VectorXd Problem::improve_by_elimination(const VectorXd& beta0, double lam,
                                        const PathOptions& opt, int* n_iter) const {
  // Greedy search over sparser local minima: hold one of the smallest nonzero coefficients at
  // zero, re-solve, and keep the change when the penalised objective decreases.
  VectorXd best = beta0;
  double f_best = solver_objective(best, lam, opt);
  const double rss_null = rss1(VectorXd::Zero(p_));
  std::vector<char> held(p_, 0);
  PathOptions screen = opt;  // candidates are screened with a short solve, the winner polished
  screen.max_iter = std::min(opt.max_iter, opt.screen_iter);
  bool changed = false;
  for (int round = 0; round < opt.drop_rounds; ++round) {
    std::vector<int> nz;
    for (int j = 0; j < p_; ++j)
      if (best(j) != 0.0) nz.push_back(j);
    if (nz.empty()) break;
    std::sort(nz.begin(), nz.end(),
              [&](int i, int j) { return std::abs(best(i)) < std::abs(best(j)); });
    const int k = std::min<int>(opt.drop_candidates, static_cast<int>(nz.size()));
    // Candidates are independent re-solves: screened in parallel, compared in a fixed order.
    std::vector<VectorXd> cands(k);
    std::vector<int> cand_iters(k, 0);
    auto screen_one = [&](int c) {
      std::vector<char> trial_held = held;
      trial_held[nz[c]] = 1;
      VectorXd start = best;
      start(nz[c]) = 0.0;
      bool conv = false;
      cands[c] = solve_thresholded(start, lam, screen, &cand_iters[c], &conv, trial_held);
    };
    const int n_threads = std::max(1, std::min(opt.threads, k));
    run_on_threads(n_threads, [&](int t) {
      for (int c = t; c < k; c += n_threads) screen_one(c);
    });
    VectorXd round_best;
    double f_round = f_best;
    int j_round = -1;
    for (int c = 0; c < k; ++c) {
      const VectorXd& cand = cands[c];
      *n_iter += cand_iters[c];
      const double f = solver_objective(cand, lam, opt);
      // a candidate fitting worse than the null model sits in the QIF's spurious region
      if (rss1(cand) > rss_null) continue;
      if (f < f_round - 1e-12 * (1.0 + std::abs(f_round))) {
        f_round = f;
        round_best = cand;
        j_round = nz[c];
      }
    }
    if (j_round < 0) break;
    held[j_round] = 1;
    best = round_best;
    f_best = f_round;
    changed = true;
  }
  if (changed) {
    int iters = 0;
    bool conv = false;
    const VectorXd polished = solve_thresholded(best, lam, opt, &iters, &conv, held);
    *n_iter += iters;
    if (solver_objective(polished, lam, opt) <= f_best) best = polished;
  }
  return best;
}

VectorXd Problem::improve_by_addition(const VectorXd& beta0, double lam, const PathOptions& opt,
                                     int* n_iter) const {
  // Single-coefficient additions: the zero coefficients whose exact derivative is largest
  // (largest KKT violation) are started at a Newton-sized value and the fit re-solved; the best
  // is kept when it lowers the penalised objective.
  const int k_max = opt.add_candidates;
  if (k_max <= 0 || lam <= 0.0) return beta0;
  const Evaluation ev = evaluate(beta0, true);
  VectorXd grad = ev.grad;
  if (opt.mu > 0.0) grad += opt.mu * (beta0 - opt.anchor);
  std::vector<int> zero;
  for (int j = 0; j < p_; ++j)
    if (beta0(j) == 0.0 && std::abs(grad(j)) > lam) zero.push_back(j);  // KKT violated
  if (zero.empty()) return beta0;
  std::sort(zero.begin(), zero.end(),
            [&](int i, int j) { return std::abs(grad(i)) > std::abs(grad(j)); });
  const int k = std::min<int>(k_max, static_cast<int>(zero.size()));
  const double f0 = solver_objective(beta0, lam, opt);
  const double rss_null = rss1(VectorXd::Zero(p_));
  PathOptions screen = opt;
  screen.max_iter = std::min(opt.max_iter, opt.screen_iter);
  std::vector<VectorXd> cands(k);
  std::vector<int> cand_iters(k, 0);
  auto screen_one = [&](int c) {
    const int j = zero[c];
    const double hjj = std::max(ev.gn_hessian(j, j) + opt.mu, 1e-12);
    VectorXd start = beta0;
    const double size = std::max(std::abs(grad(j)) - lam, 0.0) / hjj;
    start(j) = (grad(j) > 0 ? -1.0 : 1.0) * std::max({size, lam, 2.0 * opt.eps1});
    bool conv = false;
    cands[c] = solve_thresholded(start, lam, screen, &cand_iters[c], &conv, {});
  };
  const int n_threads = std::max(1, std::min(opt.threads, k));
  run_on_threads(n_threads, [&](int t) {
    for (int c = t; c < k; c += n_threads) screen_one(c);
  });
  VectorXd best = beta0;
  double f_best = f0;
  bool changed = false;
  for (int c = 0; c < k; ++c) {
    *n_iter += cand_iters[c];
    if (rss1(cands[c]) > rss_null) continue;
    const double f = solver_objective(cands[c], lam, opt);
    if (f < f_best - 1e-12 * (1.0 + std::abs(f_best))) {
      f_best = f;
      best = cands[c];
      changed = true;
    }
  }
  if (changed) {
    int iters = 0;
    bool conv = false;
    const VectorXd polished = solve_thresholded(best, lam, opt, &iters, &conv, {});
    *n_iter += iters;
    if (solver_objective(polished, lam, opt) <= f_best) best = polished;
  }
  return best;
}

PathResult Problem::path(const VectorXd& start, const VectorXd& lambdas,
                         const PathOptions& opt_in) const {
  PathOptions opt = opt_in;
  if (!std::isfinite(opt.rss_cap)) opt.rss_cap = rss1(VectorXd::Zero(p_));
  if (start.size() != p_) throw std::invalid_argument("start has the wrong length");
  const Eigen::Index L = lambdas.size();
  PathResult out;
  out.beta = MatrixXd::Zero(L, p_);
  out.objective = VectorXd::Zero(L);
  out.qif = VectorXd::Zero(L);
  out.rss1 = VectorXd::Zero(L);
  out.stationarity = VectorXd::Zero(L);
  out.n_iter = Eigen::VectorXi::Zero(L);
  out.converged = Eigen::VectorXi::Zero(L);
  // SCAD makes the objective non-convex, and the continuously updated QIF has spurious minima
  // far from the data (huge residuals shrink it). The path therefore stays local, as R's does:
  // warm starts from the unpenalised estimate upwards, improved by greedy eliminations of
  // coefficients inside SCAD's shrinking range, optionally a backward pass.
  const double rss_null = rss1(VectorXd::Zero(p_));
  auto consider = [&](Eigen::Index l, const VectorXd& cand, int iters, bool conv, bool first) {
    const double f = solver_objective(cand, lambdas(l), opt);
    out.n_iter(l) += iters;
    // A candidate fitting worse than the null model sits in the QIF's spurious region.
    if (!first && rss1(cand) > rss_null) return;
    if (first || f < out.objective(l) - 1e-12 * (1.0 + std::abs(out.objective(l)))) {
      out.beta.row(l) = cand.transpose();
      out.objective(l) = f;
      out.converged(l) = conv ? 1 : 0;
    }
  };
  VectorXd beta = start;
  for (Eigen::Index l = 0; l < L; ++l) {
    int iters = 0;
    bool conv = false;
    beta = solve_thresholded(beta, lambdas(l), opt, &iters, &conv, {});
    consider(l, beta, iters, conv, true);
    // Extra starts only where the QIF is identified (at least as many retained moments as
    // nonzero coefficients); otherwise Q has a continuum of zeros and they only cost time.
    bool identified = true;
    if (opt.multi_start && lambdas(l) > 0.0) {
      const Evaluation ev = evaluate(beta, false);
      int kept = 0;
      for (int r : ev.n_retained) kept += r;
      identified = kept >= static_cast<int>((beta.array() != 0.0).count());
    }
    if (opt.multi_start && lambdas(l) > 0.0) {
      if (identified) {
        int more = 0;
        const VectorXd e = improve_by_elimination(beta, lambdas(l), opt, &more);
        consider(l, e, more, true, false);
        int added = 0;
        const VectorXd cur = out.beta.row(l).transpose();
        const VectorXd ad = improve_by_addition(cur, lambdas(l), opt, &added);
        consider(l, ad, added, true, false);
      }
      // Where the QIF is not identified, LLA restarted with lasso weights (Fan, Xue & Zou
      // 2014) pulls the drifting warm start back to a sparse fit; optionally the null model.
      if (opt.lasso_restart && !identified && opt.mu == 0.0) {
        const VectorXd s = solve_thresholded(beta, lambdas(l), opt, &iters, &conv, {}, true);
        consider(l, s, iters, conv, false);
      }
      if (opt.null_candidate) consider(l, VectorXd::Zero(p_), 0, true, false);
      beta = out.beta.row(l).transpose();
    }
  }
  if (opt.backward_pass) {
    beta = out.beta.row(L - 1).transpose();
    for (Eigen::Index l = L - 2; l >= 0; --l) {
      int iters = 0;
      bool conv = false;
      beta = solve_thresholded(beta, lambdas(l), opt, &iters, &conv, {});
      consider(l, beta, iters, conv, false);
      beta = out.beta.row(l).transpose();
    }
  }
  for (Eigen::Index l = 0; l < L; ++l) {
    const VectorXd b = out.beta.row(l).transpose();
    const Evaluation e = evaluate(b, true, true);
    out.qif(l) = e.Q;
    out.rss1(l) = rss1(b);
    out.stationarity(l) = stationarity_of(b, lambdas(l), opt, e);
    // reported convergence: the kept solution meets the stationarity tolerance
    out.converged(l) = out.stationarity(l) <= opt.stat_tol ? 1 : 0;
  }
  return out;
}

}  // namespace mbi
}  // namespace hetmtl
