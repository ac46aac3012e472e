#include "proximal.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace hetmtl {

namespace {
void check_rows(const char* name, Eigen::Index got, Eigen::Index want) {
  if (got != want)
    throw std::invalid_argument(std::string(name) + " has length " + std::to_string(got) + ", expected " +
                                std::to_string(want) + " (one per task)");
}
void check_weights(const Eigen::Ref<const VectorXd>& w) {
  if (w.size() == 0) throw std::invalid_argument("no tasks (empty coefficient matrix)");
  if (!w.allFinite() || (w.array() < 0).any()) throw std::invalid_argument("weights must be finite and >= 0");
  if (w.sum() <= 0) throw std::invalid_argument("weights must not all be zero");
}
}  // namespace

MatrixXd prox_to_center(const Eigen::Ref<const MatrixXd>& Z, const Eigen::Ref<const VectorXd>& center,
                        const Eigen::Ref<const VectorXd>& lambda, const Eigen::Ref<const VectorXd>& step,
                        const Eigen::Ref<const VectorXd>& weights, CenterPenalty penalty) {
  const Eigen::Index K = Z.rows();
  check_rows("center", center.size(), Z.cols());
  check_rows("lambda", lambda.size(), K);
  check_rows("step", step.size(), K);
  check_rows("weights", weights.size(), K);
  if ((lambda.array() < 0).any() || (step.array() < 0).any() || (weights.array() < 0).any())
    throw std::invalid_argument("lambda, step and weights must be >= 0");
  MatrixXd out(K, Z.cols());
  for (Eigen::Index k = 0; k < K; ++k) {
    const double t = step(k) * lambda(k) * weights(k);
    const VectorXd diff = Z.row(k).transpose() - center;
    if (penalty == CenterPenalty::GroupL2) {
      const double norm = diff.norm();
      // zero distance (or a threshold that reaches the centre) returns the centre exactly
      const double shrink = (norm <= t || norm == 0.0) ? 0.0 : 1.0 - t / norm;
      out.row(k) = (center + shrink * diff).transpose();
    } else {
      const VectorXd mag = (diff.array().abs() - t).max(0.0).matrix();
      out.row(k) = (center.array() + diff.array().sign() * mag.array()).matrix().transpose();
    }
  }
  return out;
}

CenterResult geometric_median(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights,
                              int max_iter, double tol) {
  const Eigen::Index K = V.rows();
  check_rows("weights", weights.size(), K);
  check_weights(weights);
  VectorXd y = weighted_mean(V, weights);
  CenterResult res{y, 0, false};
  if (K == 1) {
    res.center = V.row(0).transpose();
    res.converged = true;
    return res;
  }
  const double scale = 1.0 + V.cwiseAbs().maxCoeff();
  const double coincide = 1e-12 * scale;
  for (int it = 1; it <= max_iter; ++it) {
    VectorXd num = VectorXd::Zero(V.cols());
    VectorXd resid = VectorXd::Zero(V.cols());  // sum_{k not at y} w_k (v_k - y) / d_k
    double den = 0.0, eta = 0.0;                 // eta: weight sitting exactly at y
    Eigen::Index at = -1;                         // a data point coinciding with y
    for (Eigen::Index k = 0; k < K; ++k) {
      if (weights(k) == 0.0) continue;
      const VectorXd diff = V.row(k).transpose() - y;
      const double d = diff.norm();
      if (d <= coincide) {
        eta += weights(k);
        at = k;
        continue;
      }
      num += (weights(k) / d) * V.row(k).transpose();
      resid += (weights(k) / d) * diff;
      den += weights(k) / d;
    }
    VectorXd y_new;
    if (den == 0.0) {  // every weighted point sits at y: return that point exactly
      res.center = V.row(at).transpose();
      res.n_iter = it;
      res.converged = true;
      return res;
    }
    const VectorXd T = num / den;
    if (eta > 0.0) {
      // Vardi & Zhang (2000): y is the median iff ||resid|| <= eta; otherwise step away from y.
      const double r = resid.norm();
      if (r <= eta) {  // the median is the data point itself (returned exactly)
        res.center = V.row(at).transpose();
        res.n_iter = it;
        res.converged = true;
        return res;
      }
      const double a = eta / r;
      y_new = (1.0 - a) * T + a * y;
    } else {
      y_new = T;
    }
    const double change = (y_new - y).norm();
    y = y_new;
    if (change <= tol * (1.0 + y.norm())) {
      res.center = y;
      res.n_iter = it;
      res.converged = true;
      return res;
    }
    res.n_iter = it;
  }
  res.center = y;
  return res;
}

VectorXd coordinate_median(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights) {
  const Eigen::Index K = V.rows();
  check_rows("weights", weights.size(), K);
  check_weights(weights);
  const double half = 0.5 * weights.sum();
  VectorXd out(V.cols());
  std::vector<Eigen::Index> order(K);
  for (Eigen::Index j = 0; j < V.cols(); ++j) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](Eigen::Index a, Eigen::Index b) { return V(a, j) < V(b, j); });
    double acc = 0.0;
    out(j) = V(order.back(), j);
    for (Eigen::Index idx : order) {
      acc += weights(idx);
      if (acc >= half) {
        out(j) = V(idx, j);
        break;
      }
    }
  }
  return out;
}

VectorXd weighted_mean(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights) {
  check_rows("weights", weights.size(), V.rows());
  check_weights(weights);
  return (V.transpose() * weights) / weights.sum();
}

double center_penalty_value(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& center,
                            const Eigen::Ref<const VectorXd>& lambda, const Eigen::Ref<const VectorXd>& weights,
                            CenterPenalty penalty) {
  check_rows("center", center.size(), V.cols());
  check_rows("lambda", lambda.size(), V.rows());
  check_rows("weights", weights.size(), V.rows());
  double total = 0.0;
  for (Eigen::Index k = 0; k < V.rows(); ++k) {
    const VectorXd diff = V.row(k).transpose() - center;
    const double norm = penalty == CenterPenalty::GroupL2 ? diff.norm() : diff.lpNorm<1>();
    total += lambda(k) * weights(k) * norm;
  }
  return total;
}

VectorXd batched_max_eigenvalue(const Eigen::Ref<const MatrixXd>& stacked_grams, int m) {
  if (m <= 0 || stacked_grams.cols() != m || stacked_grams.rows() % m != 0)
    throw std::invalid_argument("stacked_grams must be (K*m) x m");
  const Eigen::Index K = stacked_grams.rows() / m;
  VectorXd out(K);
  for (Eigen::Index k = 0; k < K; ++k) {
    const MatrixXd G = stacked_grams.block(k * m, 0, m, m);
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(0.5 * (G + G.transpose()), Eigen::EigenvaluesOnly);
    out(k) = es.eigenvalues().maxCoeff();
  }
  return out;
}

namespace {
// prox of t * ||v - c|| restricted to the coordinates idx of row v (in place)
void prox_group(Eigen::Ref<VectorXd> v, const VectorXd& c, const std::vector<Eigen::Index>& idx, double t,
                CenterPenalty penalty) {
  if (t <= 0.0) return;
  if (penalty == CenterPenalty::GroupL2) {
    double norm2 = 0.0;
    for (Eigen::Index j : idx) norm2 += (v(j) - c(j)) * (v(j) - c(j));
    const double norm = std::sqrt(norm2);
    const double shrink = (norm <= t) ? 0.0 : 1.0 - t / norm;
    for (Eigen::Index j : idx) v(j) = c(j) + shrink * (v(j) - c(j));
  } else {
    for (Eigen::Index j : idx) {
      const double d = v(j) - c(j);
      const double mag = std::max(std::abs(d) - t, 0.0);
      v(j) = c(j) + (d > 0 ? mag : (d < 0 ? -mag : 0.0));
    }
  }
}
}  // namespace

QuadraticCenterFit prox_grad_center_quadratic(const Eigen::Ref<const MatrixXd>& stacked_grams,
                                              const Eigen::Ref<const MatrixXd>& h,
                                              const Eigen::Ref<const MatrixXd>& theta0,
                                              const Eigen::Ref<const VectorXd>& center0,
                                              const Eigen::Ref<const Eigen::VectorXi>& groups,
                                              const Eigen::Ref<const MatrixXd>& lam, double loss_scale,
                                              CenterPenalty penalty, bool joint, const std::string& center_method,
                                              int n_steps, double tol) {
  const Eigen::Index K = theta0.rows(), m = theta0.cols();
  if (K == 0 || m == 0) throw std::invalid_argument("theta0 must be non-empty (K x m)");
  if (stacked_grams.rows() != K * m || stacked_grams.cols() != m)
    throw std::invalid_argument("stacked_grams must be (K*m) x m with K = rows of theta0");
  if (h.rows() != K || h.cols() != m) throw std::invalid_argument("h must be K x m like theta0");
  check_rows("center0", center0.size(), m);
  check_rows("groups", groups.size(), m);
  const int n_groups = static_cast<int>(lam.cols());
  if (lam.rows() != K) throw std::invalid_argument("lam must have one row per task (" + std::to_string(K) + ")");
  if (groups.size() && groups.maxCoeff() >= n_groups)
    throw std::invalid_argument("groups entries must be < the number of lam columns (" + std::to_string(n_groups) + ")");
  if ((lam.array() < 0).any() || !lam.allFinite()) throw std::invalid_argument("lam must be finite and >= 0");
  if (!(loss_scale > 0)) throw std::invalid_argument("loss_scale must be > 0");
  if (center_method != "median" && center_method != "mean" && center_method != "none")
    throw std::invalid_argument("center_method must be 'median', 'mean' or 'none'");
  std::vector<std::vector<Eigen::Index>> idx(n_groups);
  for (Eigen::Index j = 0; j < m; ++j) {
    if (groups(j) < -1) throw std::invalid_argument("groups entries must be >= -1");
    if (groups(j) >= 0) idx[groups(j)].push_back(j);
  }
  VectorXd lip(K);
  for (Eigen::Index k = 0; k < K; ++k) {
    const MatrixXd Gk = stacked_grams.block(k * m, 0, m, m);
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(0.5 * (Gk + Gk.transpose()), Eigen::EigenvaluesOnly);
    lip(k) = std::max(2.0 * loss_scale * es.eigenvalues().maxCoeff(), 1e-12);
  }
  std::vector<bool> moving(n_groups, false);
  VectorXd cmask = VectorXd::Zero(m);
  for (int g = 0; g < n_groups; ++g) {
    moving[g] = joint && (lam.col(g).array() > 0).any();
    if (moving[g])
      for (Eigen::Index j : idx[g]) cmask(j) = 1.0;
  }
  VectorXd c = center0;
  MatrixXd theta = theta0;
  QuadraticCenterFit out{theta, c, 0, false};
  const VectorXd zero = VectorXd::Zero(m);
  MatrixXd grad(K, m);
  for (int it = 1; it <= n_steps; ++it) {
    for (Eigen::Index k = 0; k < K; ++k)
      grad.row(k) = (2.0 * loss_scale * (stacked_grams.block(k * m, 0, m, m) * theta.row(k).transpose() - h.row(k).transpose())).transpose();
    MatrixXd prev = theta;
    if (joint) {
      const VectorXd c_old = c.cwiseProduct(cmask);
      MatrixXd delta = theta.rowwise() - c_old.transpose();
      const double eta_c = 0.5 / lip.sum();
      c = c - eta_c * grad.colwise().sum().transpose().cwiseProduct(cmask);
      for (Eigen::Index k = 0; k < K; ++k) {
        const double eta = 0.5 / lip(k);
        VectorXd z = delta.row(k).transpose() - eta * grad.row(k).transpose();
        for (int g = 0; g < n_groups; ++g)
          prox_group(z, moving[g] ? zero : c, idx[g], eta * lam(k, g), penalty);
        delta.row(k) = z.transpose();
      }
      theta = delta.rowwise() + c.cwiseProduct(cmask).transpose();
      // non-moving groups (all lam = 0): delta is theta itself and the prox is the identity
    } else {
      for (Eigen::Index k = 0; k < K; ++k) {
        const double eta = 1.0 / lip(k);
        VectorXd z = theta.row(k).transpose() - eta * grad.row(k).transpose();
        for (int g = 0; g < n_groups; ++g) prox_group(z, c, idx[g], eta * lam(k, g), penalty);
        theta.row(k) = z.transpose();
      }
    }
    out.n_iter = it;
    if (tol > 0 && (theta - prev).cwiseAbs().maxCoeff() <= tol * (1.0 + prev.cwiseAbs().maxCoeff())) {
      out.converged = true;
      break;
    }
  }
  if (joint) {  // centres of non-moving groups are unchanged
    for (int g = 0; g < n_groups; ++g)
      if (!moving[g])
        for (Eigen::Index j : idx[g]) c(j) = center0(j);
  }
  if (center_method != "none") {
    for (int g = 0; g < n_groups; ++g) {
      if (idx[g].empty()) continue;
      MatrixXd V(K, idx[g].size());
      for (size_t a = 0; a < idx[g].size(); ++a) V.col(a) = theta.col(idx[g][a]);
      VectorXd w = lam.col(g);
      if (w.sum() <= 0) w = VectorXd::Ones(K);
      VectorXd cg;
      if (center_method == "mean")
        cg = weighted_mean(V, w);
      else if (penalty == CenterPenalty::L1)
        cg = coordinate_median(V, w);
      else
        cg = geometric_median(V, w, 100, 1e-10).center;
      for (size_t a = 0; a < idx[g].size(); ++a) c(idx[g][a]) = cg(a);
    }
  }
  out.theta = theta;
  out.center = c;
  return out;
}

}  // namespace hetmtl
