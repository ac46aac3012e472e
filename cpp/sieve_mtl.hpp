// ARMUL-type multi-task sieve regression: K sites share a basis b(x) (q columns) and fit
//   min_{beta_0, beta_1..beta_K}  sum_k w_k [ l_k(beta_k) + (alpha/2) ||r o beta_k||^2
//                                            + lambda_k ||P (beta_k - beta_0)||_2 ],
// with w_k = n_k / N, l_k the site's average loss (squared: 1/2 (y - b'beta)^2; logistic:
// log(1 + exp(b'beta)) - y b'beta), r a ridge mask (0 leaves e.g. an intercept unridged) and P
// the penalised columns (unpenalised columns are site-specific: beta_0 = 0 there).
// Solver: accelerated proximal gradient (FISTA with gradient restart) on (beta_0, v_k = beta_k -
// beta_0) with the block-diagonal majoriser D_k = 2 L_k, D_0 = 2 sum_k L_k, L_k the Lipschitz
// constant of site k's gradient; the prox of v_k is group soft-thresholding (prox_to_center).
// Used by hetmtl.latefusion.nuisance (multi-task nuisance estimation for late fusion).
#pragma once
#include <Eigen/Dense>

namespace hetmtl {

enum class SieveLoss { Squared, Logistic };

struct SieveMTLFit {
  Eigen::MatrixXd beta;    // K x q site coefficients
  Eigen::VectorXd center;  // q (0 on unpenalised columns)
  double objective;
  double residual;         // last gradient-mapping residual (max abs, metric-scaled)
  int n_iter;
  bool converged;
};

// B: N x q basis rows; y: N responses (0/1 for logistic); site: N site indices in [0, K);
// lambda: K penalty levels; penalized, ridge_mask: q (1/0 and >= 0); beta0: K x q and center0: q
// warm starts. Sites with no rows are not allowed (drop them before calling).
SieveMTLFit sieve_mtl_fit(const Eigen::Ref<const Eigen::MatrixXd>& B, const Eigen::Ref<const Eigen::VectorXd>& y,
                          const Eigen::Ref<const Eigen::VectorXi>& site, const Eigen::Ref<const Eigen::VectorXd>& lambda,
                          const Eigen::Ref<const Eigen::VectorXd>& penalized,
                          const Eigen::Ref<const Eigen::VectorXd>& ridge_mask, double alpha, SieveLoss loss,
                          const Eigen::Ref<const Eigen::MatrixXd>& beta0, const Eigen::Ref<const Eigen::VectorXd>& center0,
                          int max_iter, double tol);

}  // namespace hetmtl
