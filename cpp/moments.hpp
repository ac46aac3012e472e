// Moments of linear orthogonal scores psi_i(theta) = phi_i * (r_i - w_i * phi_i' theta).
//
// Every DML score in hetmtl is of this form: PLR (phi = 1, r = D~Y~, w = D~^2), ATE/AIPW
// (phi = 1, r = Gamma, w = 1), linear CATE in R-learner form (phi = basis, r = D~Y~,
// w = D~^2) and the DR best linear projection (phi = basis, r = Gamma, w = 1).
#pragma once
#include <Eigen/Dense>

namespace hetmtl {

using Eigen::MatrixXd;
using Eigen::VectorXd;

struct ScoreMoments {
  VectorXd theta;   // root of the empirical moment: theta = -J^{-1} b
  MatrixXd J;       // Jacobian mean(psi_a) = -mean(w phi phi')
  VectorXd b;       // mean(psi_b) = mean(phi r)
  MatrixXd Omega;   // mean(psi psi') at theta
  MatrixXd Sigma;   // J^{-1} Omega J^{-T}
  MatrixXd vcov;    // Sigma / n
  double rcond;     // reciprocal condition number of J (1-norm estimate)
};

// Solve the empirical moment equation and its sandwich variance.
ScoreMoments linear_score_moments(const Eigen::Ref<const MatrixXd>& phi,
                                  const Eigen::Ref<const VectorXd>& r,
                                  const Eigen::Ref<const VectorXd>& w);

// Per-observation scores psi_i(theta), n x d.
MatrixXd linear_scores(const Eigen::Ref<const MatrixXd>& phi, const Eigen::Ref<const VectorXd>& r,
                       const Eigen::Ref<const VectorXd>& w, const Eigen::Ref<const VectorXd>& theta);

// Coefficients of the held-out quadratic loss Q(theta) = c - 2 b'theta + theta' A theta with
// A = mean(w phi phi'), b = mean(phi r), c = mean(y2) (y2 the squared pseudo-outcome).
struct QuadraticLoss {
  MatrixXd A;
  VectorXd b;
  double c;
};
QuadraticLoss quadratic_loss_coefficients(const Eigen::Ref<const MatrixXd>& phi,
                                          const Eigen::Ref<const VectorXd>& r,
                                          const Eigen::Ref<const VectorXd>& w,
                                          const Eigen::Ref<const VectorXd>& y2);

}  // namespace hetmtl
