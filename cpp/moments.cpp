#include "moments.hpp"

#include <stdexcept>
#include <string>

namespace hetmtl {

namespace {
void check_shapes(const Eigen::Ref<const MatrixXd>& phi, const Eigen::Ref<const VectorXd>& r,
                  const Eigen::Ref<const VectorXd>& w) {
  if (phi.rows() != r.size() || phi.rows() != w.size())
    throw std::invalid_argument("phi, r and w must have the same number of rows (got " +
                                std::to_string(phi.rows()) + ", " + std::to_string(r.size()) +
                                ", " + std::to_string(w.size()) + ")");
  if (phi.rows() == 0 || phi.cols() == 0) throw std::invalid_argument("empty score");
}
}  // namespace

ScoreMoments linear_score_moments(const Eigen::Ref<const MatrixXd>& phi,
                                  const Eigen::Ref<const VectorXd>& r,
                                  const Eigen::Ref<const VectorXd>& w) {
  check_shapes(phi, r, w);
  const double n = static_cast<double>(phi.rows());
  ScoreMoments out;
  const MatrixXd wphi = phi.array().colwise() * w.array();
  out.J = -(phi.transpose() * wphi) / n;
  out.b = (phi.transpose() * r) / n;
  Eigen::FullPivLU<MatrixXd> lu(out.J);
  if (!lu.isInvertible()) throw std::domain_error("score Jacobian is singular");
  out.rcond = lu.rcond();
  out.theta = -lu.solve(out.b);
  const VectorXd resid = r - wphi * out.theta;  // psi_i = phi_i * resid_i
  const MatrixXd psi = phi.array().colwise() * resid.array();
  out.Omega = (psi.transpose() * psi) / n;
  const MatrixXd Jinv = lu.inverse();
  out.Sigma = Jinv * out.Omega * Jinv.transpose();
  out.Sigma = 0.5 * (out.Sigma + out.Sigma.transpose());
  out.vcov = out.Sigma / n;
  return out;
}

MatrixXd linear_scores(const Eigen::Ref<const MatrixXd>& phi, const Eigen::Ref<const VectorXd>& r,
                       const Eigen::Ref<const VectorXd>& w, const Eigen::Ref<const VectorXd>& theta) {
  check_shapes(phi, r, w);
  if (theta.size() != phi.cols()) throw std::invalid_argument("theta has the wrong length");
  const VectorXd resid = r - (phi * theta).cwiseProduct(w);
  return phi.array().colwise() * resid.array();
}

QuadraticLoss quadratic_loss_coefficients(const Eigen::Ref<const MatrixXd>& phi,
                                          const Eigen::Ref<const VectorXd>& r,
                                          const Eigen::Ref<const VectorXd>& w,
                                          const Eigen::Ref<const VectorXd>& y2) {
  check_shapes(phi, r, w);
  if (y2.size() != phi.rows()) throw std::invalid_argument("y2 has the wrong length");
  const double n = static_cast<double>(phi.rows());
  QuadraticLoss q;
  const MatrixXd wphi = phi.array().colwise() * w.array();
  q.A = (phi.transpose() * wphi) / n;
  q.b = (phi.transpose() * r) / n;
  q.c = y2.mean();
  return q;
}

}  // namespace hetmtl
