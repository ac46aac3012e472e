// Proximal operators and centre updates for "coefficients near a common centre" penalties.
//
// K tasks each carry a coefficient vector (row k of a K x m matrix V). The penalty
//   sum_k lambda_k * w_k * ||v_k - c||      (group-l2: ||.||_2;  l1: ||.||_1)
// keeps them near a centre c. Its proximal map with step eta_k (row-wise, c fixed) is
//   group-l2: v_k = c + max(0, 1 - t_k / ||z_k - c||_2) (z_k - c)    (= c when z_k = c)
//   l1      : v_k = c + sign(z_k - c) * max(|z_k - c| - t_k, 0)
// with t_k = eta_k * lambda_k * w_k. The centre update minimises sum_k w_k ||v_k - c||:
// the geometric median (Weiszfeld with the Vardi-Zhang step at data points) for group-l2, the
// coordinate-wise weighted median for l1, or the weighted mean (exact for a squared penalty).
// Used by the dual-encoder family (coefficients on latent encodings) and by the late-fusion
// ARMUL-type step (sieve coefficients). Kept free of torch and Python.
#pragma once
#include <Eigen/Dense>
#include <string>

namespace hetmtl {

using Eigen::MatrixXd;
using Eigen::VectorXd;

enum class CenterPenalty { GroupL2, L1 };

// Row-wise proximal map of t_k * ||v - c|| at Z (K x m), with t_k = step_k * lambda_k * weight_k.
MatrixXd prox_to_center(const Eigen::Ref<const MatrixXd>& Z, const Eigen::Ref<const VectorXd>& center,
                        const Eigen::Ref<const VectorXd>& lambda, const Eigen::Ref<const VectorXd>& step,
                        const Eigen::Ref<const VectorXd>& weights, CenterPenalty penalty);

struct CenterResult {
  VectorXd center;
  int n_iter;
  bool converged;
};

// Weighted geometric median of the rows of V (argmin_c sum_k w_k ||v_k - c||_2).
CenterResult geometric_median(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights,
                              int max_iter, double tol);

// Coordinate-wise weighted median (argmin_c sum_k w_k ||v_k - c||_1; lower median on ties).
VectorXd coordinate_median(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights);

// Weighted mean of the rows of V.
VectorXd weighted_mean(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights);

// Penalty value sum_k lambda_k w_k ||v_k - c||.
double center_penalty_value(const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& center,
                            const Eigen::Ref<const VectorXd>& lambda, const Eigen::Ref<const VectorXd>& weights,
                            CenterPenalty penalty);

// Largest eigenvalue of each symmetric m x m block of a stacked (K*m) x m matrix of Gram
// matrices: the Lipschitz constants (up to a loss scale) of K least-squares gradients.
VectorXd batched_max_eigenvalue(const Eigen::Ref<const MatrixXd>& stacked_grams, int m);

// Proximal gradient for K least-squares-type tasks whose coefficient groups are pulled to centres:
//   min  s * sum_k (theta_k' G_k theta_k - 2 h_k' theta_k)  +  sum_k sum_g lam(k, g) ||theta_k[g] - c[g]||
// over theta (K x m) and the centres c. groups(j) = g >= 0 puts coordinate j in group g; -1 leaves
// it unpenalised (e.g. an intercept); lam is K x n_groups (groups may be empty). Lipschitz constants l_k = 2 s lambda_max(G_k).
//  - joint = true: theta_k = c + delta_k, prox-gradient on (c, delta) with the block-diagonal
//    majoriser (step 1/(2 l_k) for delta_k, 1/(2 sum_k l_k) for c); groups whose lam column is
//    all zero keep c = 0 and are plain gradient steps. Converges to the joint optimum (convex).
//  - joint = false: theta_k steps with 1/l_k and prox towards the fixed c.
// After n_steps (or when the largest coefficient change falls below tol), the centres of the
// penalised groups are set to their exact minimiser (center_method "median": geometric median
// for group-l2, coordinate median for l1; "mean"; "none" keeps them) with weights lam(., g)
// (all ones if that column is zero). Used by the dual-encoder coefficient step and usable for
// ARMUL-type multi-task sieve fits.
struct QuadraticCenterFit {
  MatrixXd theta;
  VectorXd center;
  int n_iter;
  bool converged;
};
QuadraticCenterFit prox_grad_center_quadratic(const Eigen::Ref<const MatrixXd>& stacked_grams,
                                              const Eigen::Ref<const MatrixXd>& h,
                                              const Eigen::Ref<const MatrixXd>& theta0,
                                              const Eigen::Ref<const VectorXd>& center0,
                                              const Eigen::Ref<const Eigen::VectorXi>& groups,
                                              const Eigen::Ref<const MatrixXd>& lam, double loss_scale,
                                              CenterPenalty penalty, bool joint, const std::string& center_method,
                                              int n_steps, double tol);

}  // namespace hetmtl
