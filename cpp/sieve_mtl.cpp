#include "sieve_mtl.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "proximal.hpp"

namespace hetmtl {

using Eigen::MatrixXd;
using Eigen::VectorXd;

namespace {

double loss_derivative(double eta, double y, SieveLoss loss) {
  if (loss == SieveLoss::Squared) return eta - y;
  const double p = eta >= 0 ? 1.0 / (1.0 + std::exp(-eta)) : std::exp(eta) / (1.0 + std::exp(eta));
  return p - y;
}

double loss_value(double eta, double y, SieveLoss loss) {
  if (loss == SieveLoss::Squared) return 0.5 * (eta - y) * (eta - y);
  // log(1 + exp(eta)) - y * eta, computed stably
  const double softplus = eta > 0 ? eta + std::log1p(std::exp(-eta)) : std::log1p(std::exp(eta));
  return softplus - y * eta;
}

struct Problem {
  std::vector<MatrixXd> Bk;  // per-site design blocks
  std::vector<VectorXd> yk;  // per-site responses
  VectorXd w;       // n_k / N
  VectorXd pen;     // penalised columns (0/1)
  VectorXd ridge;   // alpha * ridge mask
  SieveLoss loss;
  Eigen::Index K, q, N;

  // Site coefficients beta_k = center * pen + V_k.
  MatrixXd betas(const VectorXd& c, const MatrixXd& V) const { return V.rowwise() + c.cwiseProduct(pen).transpose(); }

  // Gradients with respect to beta_k (K x q).
  MatrixXd gradient(const MatrixXd& beta) const {
    MatrixXd g(K, q);
    for (Eigen::Index k = 0; k < K; ++k) {
      VectorXd eta = Bk[k] * beta.row(k).transpose();
      for (Eigen::Index i = 0; i < eta.size(); ++i) eta(i) = loss_derivative(eta(i), yk[k](i), loss);
      g.row(k) = (Bk[k].transpose() * eta).transpose() / static_cast<double>(N) +
                 w(k) * ridge.cwiseProduct(beta.row(k).transpose()).transpose();
    }
    return g;
  }

  double smooth_value(const MatrixXd& beta) const {
    double s = 0.0;
    for (Eigen::Index k = 0; k < K; ++k) {
      const VectorXd eta = Bk[k] * beta.row(k).transpose();
      for (Eigen::Index i = 0; i < eta.size(); ++i) s += loss_value(eta(i), yk[k](i), loss);
    }
    s /= static_cast<double>(N);
    for (Eigen::Index k = 0; k < K; ++k) s += 0.5 * w(k) * (ridge.array() * beta.row(k).transpose().array().square()).sum();
    return s;
  }
};

}  // namespace

SieveMTLFit sieve_mtl_fit(const Eigen::Ref<const MatrixXd>& B, const Eigen::Ref<const VectorXd>& y,
                          const Eigen::Ref<const Eigen::VectorXi>& site, const Eigen::Ref<const VectorXd>& lambda,
                          const Eigen::Ref<const VectorXd>& penalized, const Eigen::Ref<const VectorXd>& ridge_mask,
                          double alpha, SieveLoss loss, const Eigen::Ref<const MatrixXd>& beta0,
                          const Eigen::Ref<const VectorXd>& center0, int max_iter, double tol) {
  const Eigen::Index N = B.rows(), q = B.cols(), K = lambda.size();
  if (N == 0 || q == 0 || K == 0) throw std::invalid_argument("B must be non-empty (N x q) and lambda non-empty (K)");
  if (y.size() != N || site.size() != N) throw std::invalid_argument("y and site must have one entry per row of B");
  if (penalized.size() != q || ridge_mask.size() != q || center0.size() != q)
    throw std::invalid_argument("penalized, ridge_mask and center0 must have one entry per column of B");
  if (beta0.rows() != K || beta0.cols() != q) throw std::invalid_argument("beta0 must be K x q");
  if (!(alpha >= 0) || !std::isfinite(alpha)) throw std::invalid_argument("alpha must be finite and >= 0");
  if ((lambda.array() < 0).any() || !lambda.allFinite()) throw std::invalid_argument("lambda must be finite and >= 0");
  if (!B.allFinite() || !y.allFinite()) throw std::invalid_argument("B and y must be finite");
  if (site.minCoeff() < 0 || site.maxCoeff() >= K) throw std::invalid_argument("site indices must lie in [0, K)");
  if (loss == SieveLoss::Logistic && ((y.array() != 0.0) && (y.array() != 1.0)).any())
    throw std::invalid_argument("logistic loss needs 0/1 responses");

  Problem pr{{}, {}, VectorXd::Zero(K), penalized.cwiseMin(1.0).cwiseMax(0.0), alpha * ridge_mask, loss, K, q, N};
  for (Eigen::Index i = 0; i < N; ++i) pr.w(site(i)) += 1.0;
  if ((pr.w.array() == 0).any()) throw std::invalid_argument("every site needs at least one row");
  std::vector<Eigen::Index> fill(K, 0);
  for (Eigen::Index k = 0; k < K; ++k) {
    pr.Bk.emplace_back(static_cast<Eigen::Index>(pr.w(k)), q);
    pr.yk.emplace_back(static_cast<Eigen::Index>(pr.w(k)));
  }
  for (Eigen::Index i = 0; i < N; ++i) {
    const int k = site(i);
    pr.Bk[k].row(fill[k]) = B.row(i);
    pr.yk[k](fill[k]++) = y(i);
  }
  pr.w /= static_cast<double>(N);
  const double curv = loss == SieveLoss::Squared ? 1.0 : 0.25;
  VectorXd L(K);
  for (Eigen::Index k = 0; k < K; ++k) {
    const MatrixXd G = pr.Bk[k].transpose() * pr.Bk[k];
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(G, Eigen::EigenvaluesOnly);
    L(k) = std::max(curv * es.eigenvalues().maxCoeff() / N + pr.w(k) * pr.ridge.maxCoeff(), 1e-12);
  }
  const VectorXd Dk = 2.0 * L;
  const double D0 = 2.0 * L.sum();
  std::vector<Eigen::Index> pcols;
  for (Eigen::Index j = 0; j < q; ++j)
    if (pr.pen(j) > 0) pcols.push_back(j);
  const Eigen::Index m = static_cast<Eigen::Index>(pcols.size());
  const VectorXd step = Dk.cwiseInverse();
  const VectorXd zero_m = VectorXd::Zero(m);

  // prox-gradient map from the point (c, V): returns (c+, V+)
  auto prox_step = [&](const VectorXd& c, const MatrixXd& V, VectorXd& c_new, MatrixXd& V_new) {
    const MatrixXd g = pr.gradient(pr.betas(c, V));
    c_new = (c - g.colwise().sum().transpose() / D0).cwiseProduct(pr.pen);
    V_new = V - step.asDiagonal() * g;
    if (m > 0) {
      MatrixXd Z(K, m);
      for (Eigen::Index a = 0; a < m; ++a) Z.col(a) = V_new.col(pcols[a]);
      const MatrixXd P = prox_to_center(Z, zero_m, lambda, step, pr.w, CenterPenalty::GroupL2);
      for (Eigen::Index a = 0; a < m; ++a) V_new.col(pcols[a]) = P.col(a);
    }
  };

  VectorXd c = center0.cwiseProduct(pr.pen);
  MatrixXd V = beta0.rowwise() - c.transpose();
  VectorXd yc = c, c_next;
  MatrixXd yV = V, V_next;
  double t = 1.0;
  SieveMTLFit out{};
  out.converged = false;
  for (int it = 1; it <= max_iter; ++it) {
    prox_step(yc, yV, c_next, V_next);
    // gradient-mapping residual in the metric D
    const double res = std::max((D0 * (yc - c_next)).cwiseAbs().maxCoeff(),
                                (Dk.asDiagonal() * (yV - V_next)).cwiseAbs().maxCoeff());
    out.n_iter = it;
    out.residual = res;
    const double restart = D0 * (yc - c_next).dot(c_next - c) + (Dk.asDiagonal() * (yV - V_next)).cwiseProduct(V_next - V).sum();
    const double t_next = restart > 0 ? 1.0 : 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t * t));
    const double mom = restart > 0 ? 0.0 : (t - 1.0) / t_next;
    yc = c_next + mom * (c_next - c);
    yV = V_next + mom * (V_next - V);
    c = c_next;
    V = V_next;
    t = t_next;
    if (res <= tol) {
      out.converged = true;
      break;
    }
  }
  out.beta = pr.betas(c, V);
  out.center = c;
  double penalty = 0.0;
  for (Eigen::Index k = 0; k < K; ++k) {
    double s = 0.0;
    for (Eigen::Index j : pcols) s += V(k, j) * V(k, j);
    penalty += pr.w(k) * lambda(k) * std::sqrt(s);
  }
  out.objective = pr.smooth_value(out.beta) + penalty;
  return out;
}

}  // namespace hetmtl
