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

}  // namespace hetmtl
