// Late-fusion aggregation of per-site estimates (latefusion.md §3.3-3.5, §5).
//
// Solves, for one tuning constant C (lambda_k = C * shape_k),
//
//   min_{theta_1..theta_K, theta_0}  sum_k w_k [ 1/2 (theta_k - that_k)' H_k (theta_k - that_k)
//                                                + pen_k(theta_k - theta_0) ]
//
//   squared:          pen_k(v) = lambda_k ||v||^2          (closed form, one linear system)
//   group, matched:   pen_k(v) = lambda_k ||H_k^{1/2} v||  (profiled: multivariate Huber centre)
//   group, euclidean: pen_k(v) = lambda_k ||v||            (profiled: exact per-site solution)
//
// The group problems are solved on the profiled centre objective F(c) = sum_k w_k phi_k(c)
// (phi_k = min over theta_k) by damped Newton steps with a majorise-minimise fallback (the
// IRLS / preconditioned-gradient step, which always decreases F), then the per-site minimisers
// are read off in closed form. C = 0 returns the site estimates, C = +inf complete pooling.
#pragma once
#include <Eigen/Dense>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace hetmtl {
namespace fusion {

using Eigen::MatrixXd;
using Eigen::VectorXd;

enum class Penalty { Squared, GroupMatched, GroupEuclidean };
Penalty parse_penalty(const std::string& penalty, const std::string& metric);

enum class LossMatrix { Vcov, Jacobian, Identity };
LossMatrix parse_loss_matrix(const std::string& name);

// Loss matrices H_k and DML covariances V_k = J^{-1} Omega J^{-T} / n_k of every site.
// vcov: H = Sigma^{-1} = J' Omega^{-1} J (= V^{-1} / n); jacobian: -sym(J); identity: I.
// bad_site is the index of the first site whose H or V is not positive definite (-1: none).
struct SiteMatrices {
  std::vector<MatrixXd> H, V;
  int bad_site = -1;
  std::string reason;
};
SiteMatrices site_matrices(const std::vector<MatrixXd>& J, const std::vector<MatrixXd>& Omega,
                           const VectorXd& n, LossMatrix kind);

struct Options {
  double tol = 1e-12;  // stop when ||step|| <= tol * (1 + ||c||)
  int max_iter = 1000;
  int threads = 1;  // threads for the per-site loops (used only from 2 x 2000 sites up)
};

struct Solution {
  VectorXd centre;             // d
  MatrixXd theta;              // d x K (column k = site k)
  std::vector<uint8_t> fused;  // theta_k == centre
  double objective = 0.0;
  int iterations = 0;
  bool converged = true;
};

class Problem {
 public:
  // theta_hat: d x K; H: K positive-definite d x d; w: K positive weights; shape: lambda_k / C.
  Problem(MatrixXd theta_hat, std::vector<MatrixXd> H, VectorXd w, VectorXd shape);

  int K() const { return static_cast<int>(theta_hat_.cols()); }
  int d() const { return static_cast<int>(theta_hat_.rows()); }
  const MatrixXd& theta_hat() const { return theta_hat_; }

  Solution solve(double C, Penalty pen, const VectorXd* start, const Options& opt) const;
  // The same, at other site estimates (bootstrap draws) with the same H, w, shape.
  // rho_cache (Euclidean; optional): per-site radii carried between solves as warm starts of the
  // per-site secular equations (path, bootstrap); any content is valid, it only affects speed.
  Solution solve_at(const MatrixXd& theta_hat, double C, Penalty pen, const VectorXd* start,
                    const Options& opt, std::vector<double>* rho_cache = nullptr) const;
  // Solutions along a grid of C, each warm-started at the previous centre.
  std::vector<Solution> path(const std::vector<double>& C_grid, Penalty pen,
                             const Options& opt) const;
  // Held-out losses sum_k lw_k (c_k - 2 b_k' theta_k + theta_k' A_k theta_k) along a C grid.
  std::vector<double> path_losses(const std::vector<double>& C_grid, Penalty pen,
                                  const std::vector<MatrixXd>& A, const MatrixXd& b /* d x K */,
                                  const VectorXd& c, const VectorXd& lw, const Options& opt) const;
  double objective(const MatrixXd& theta, const VectorXd& centre, double C, Penalty pen) const;

  // Squared penalty: theta_tilde_k = P_k that_k + (I - P_k) theta_0, theta_0 = sum_j G_j that_j.
  void squared_map(double C, std::vector<MatrixXd>& P, std::vector<MatrixXd>& G) const;
  // Covariance blocks of the squared-penalty estimator given site covariances V (delta method,
  // exact for the linear map): cov_sites[k] = Cov(theta_tilde_k), cov_centre = Cov(theta_0),
  // cross[k] = Cov(theta_tilde_k, theta_0).
  void squared_covariance(double C, const std::vector<MatrixXd>& V, std::vector<MatrixXd>& cov_sites,
                          MatrixXd& cov_centre, std::vector<MatrixXd>& cross) const;

  // Parametric bootstrap: that_k* ~ N(that_k, V_k) (seeded mt19937_64), refit with the same C.
  struct Bootstrap {
    MatrixXd centre;                // B x d
    std::vector<MatrixXd> theta;    // B entries of d x K
    std::vector<int> fused_count;   // K
    int n_not_converged = 0;
  };
  Bootstrap bootstrap(const std::vector<MatrixXd>& V, double C, Penalty pen, int n_boot,
                      uint64_t seed, const Options& opt) const;

 private:
  VectorXd gls_centre(const MatrixXd& th) const;
  Solution pooled(const MatrixXd& th) const;
  Solution unpooled(const MatrixXd& th, Penalty pen, const Options& opt) const;
  Solution solve_squared(const MatrixXd& th, double C) const;
  Solution solve_group(const MatrixXd& th, double C, Penalty pen, const VectorXd* start,
                       const Options& opt, std::vector<double>* rho_cache) const;
  // Profiled objective F(c); optionally its gradient, Newton Hessian and majoriser Hessian,
  // and the per-site minimisers. rho (Euclidean only, optional, K entries): per-site radii
  // ||theta_k - c|| of the previous evaluation, used as warm starts and updated (0 = fused).
  double profile(const MatrixXd& th, const VectorXd& c, double C, Penalty pen, VectorXd* grad,
                 MatrixXd* newton, MatrixXd* major, Solution* sol, double* rho = nullptr,
                 int threads = 1) const;
  // Fixed-size kernels (D = d for d <= 8, else Eigen::Dynamic): no heap allocation per site.
  template <int D>
  double profile_t(const MatrixXd& th, const VectorXd& c, double C, Penalty pen, VectorXd* grad,
                   MatrixXd* newton, MatrixXd* major, Solution* sol, double* rho, int k_begin,
                   int k_end) const;
  template <int D>
  Solution solve_squared_t(const MatrixXd& th, double C) const;
  void ensure_eigen(int threads = 1) const;

  MatrixXd theta_hat_;
  std::vector<MatrixXd> H_;
  VectorXd w_, shape_;
  MatrixXd wH_sum_;  // sum_k w_k H_k
  mutable std::once_flag eig_once_;
  mutable MatrixXd evec_;  // d x (d K): eigenvectors of H_k in columns k d .. k d + d - 1
  mutable MatrixXd eval_;  // d x K
};

}  // namespace fusion
}  // namespace hetmtl
