// MBI (multiple block-wise imputation, Xue & Qu 2021): the penalised, continuously updated
// quadratic inference function over estimating equations from every (group, donor-group)
// imputation, with the eigenvalue truncation of the weight matrix used by R's BlockMissingData,
// SCAD penalty, and a deterministic proximal-Newton path solver.
//
// Preprocessing (standardisation, grouping, regression imputation) happens in Python
// (hetmtl.blockwise.mbi); this kernel receives, per missing-pattern group, the centred response,
// the imputed copies of the group's standardised rows and each copy's instrument columns.
#pragma once
#include <Eigen/Dense>
#include <vector>

namespace hetmtl {
namespace mbi {

using Eigen::MatrixXd;
using Eigen::VectorXd;

// One missing-pattern group: n_k rows, m_k imputed copies (copy 0 uses the first donor group).
struct Group {
  VectorXd y;                                // n_k, centred response
  std::vector<MatrixXd> copies;              // m_k matrices n_k x p (standardised, imputed)
  std::vector<std::vector<int>> instruments;  // per copy: 0-based columns observed in group and donor
  std::vector<std::vector<int>> diff_cols;    // per copy: columns where it differs from copy 0
  // precomputed from the above
  std::vector<MatrixXd> Z;   // per copy: n_k x d_s instrument columns
  std::vector<MatrixXd> D;   // per copy: d_s x p, (1/n_k) Z' X_s  (g_s = b_s - D_s beta)
  std::vector<VectorXd> b;   // per copy: d_s, (1/n_k) Z' y
};

struct Evaluation {
  double Q = 0.0;               // sum over groups of g*' C*^{-1} g*
  VectorXd grad;                // gradient of Q with the truncation T held fixed, C(beta) varying
  VectorXd grad_fixed_weight;   // gradient with C* and T held fixed (R's finite-difference target)
  MatrixXd gn_hessian;          // 2 G*' C*^{-1} G*  (Gauss-Newton curvature), p x p
  std::vector<int> n_moments;   // per group: moments before truncation (after dropping copies)
  std::vector<int> n_retained;  // per group: moments kept after truncation
};

struct PathOptions {
  double a = 3.7;
  double eps1 = 1e-3;      // |beta_j| below this is set to 0 after solving each lambda > 0
  double tol = 1e-8;       // convergence: max |step| on the standardised scale
  int max_iter = 500;      // proximal Newton iterations per lambda
  bool multi_start = true;     // greedy eliminations of small coefficients at each lambda
  bool lasso_restart = true;   // LLA restart with lasso weights where not identified
  bool backward_pass = false;  // also warm-start from the larger lambda; keep the best
  bool null_candidate = false; // also consider beta = 0 at every lambda
  int drop_candidates = 3; // elimination: smallest nonzero coefficients tried per round
  int drop_rounds = 2;     // elimination rounds per lambda
  int screen_iter = 25;    // iterations of the short solve that screens each elimination
  int threads = 1;         // threads for the elimination candidates (results do not depend on it)
  // Proximal anchor (used where the QIF is not identified): the solver minimises
  // Q + SCAD + mu/2 ||beta - anchor||^2. mu = 0 (default) switches it off.
  double mu = 0.0;
  VectorXd anchor;
};

struct PathResult {
  MatrixXd beta;            // L x p (standardised scale)
  VectorXd objective;       // penalised objective at each solution
  VectorXd qif;             // Q at each solution
  VectorXd rss1;            // RSS1 (per-group average over copies)
  Eigen::VectorXi n_iter;
  Eigen::VectorXi converged;
};

class Problem {
 public:
  Problem(std::vector<Group> groups, double eps3);

  int p() const { return p_; }
  int n() const { return n_; }
  int n_groups() const { return static_cast<int>(groups_.size()); }

  // Q(beta) and, if with_derivatives, its gradients and Gauss-Newton curvature.
  Evaluation evaluate(const VectorXd& beta, bool with_derivatives) const;
  double qif(const VectorXd& beta) const { return evaluate(beta, false).Q; }
  double objective(const VectorXd& beta, double lambda, double a) const;
  // objective() plus the proximal anchor term of `opt` (the function the path solver minimises).
  double solver_objective(const VectorXd& beta, double lambda, const PathOptions& opt) const;
  // SCAD penalty plus the anchor term of `opt`.
  double solver_penalty(const VectorXd& beta, double lambda, const PathOptions& opt) const;
  // RSS1: sum over groups of the residual sum of squares averaged over the group's copies.
  double rss1(const VectorXd& beta) const;
  // lambda_max = max_j |dQ/dbeta_j (fixed weight)| at beta_start, plus 0.5 (R's construction).
  double lambda_max(const VectorXd& beta_start) const;

  // Minimise Q + SCAD_lambda from `start`. `frozen` marks coordinates held at 0 (may be empty).
  VectorXd solve(const VectorXd& start, double lambda, const PathOptions& opt, int* n_iter,
                 bool* converged, const std::vector<char>& frozen,
                 bool lasso_first = false) const;
  // solve(), then zero |beta_j| < eps1 and re-solve with those held at zero (lambda > 0).
  VectorXd solve_thresholded(const VectorXd& start, double lambda, const PathOptions& opt,
                             int* n_iter, bool* converged,
                             const std::vector<char>& held,
                             bool lasso_first = false) const;
  // Greedy elimination of small coefficients, kept when it lowers the objective.
  VectorXd improve_by_elimination(const VectorXd& beta, double lambda, const PathOptions& opt,
                                  int* n_iter) const;
  // Whole path with warm starts, smallest lambda first.
  PathResult path(const VectorXd& start, const VectorXd& lambdas, const PathOptions& opt) const;

 private:
  std::vector<Group> groups_;
  double eps3_;
  int p_ = 0;
  int n_ = 0;
};

// Lasso path (1/2n)||y - b0 - X beta||^2 + lambda ||beta||_1 by cyclic coordinate descent with
// covariance updates and active-set cycling (glmnet's algorithm), warm-started along `lambdas`
// (decreasing). Columns are used as given (scale them beforehand for glmnet's standardize).
// Converged when max_j G_jj dbeta_j^2 < thresh * (centred y'y / n), glmnet's rule.
// Returns p x L coefficients (intercept = mean(y) - mean(X) beta).
MatrixXd lasso_path(const MatrixXd& X, const VectorXd& y, const VectorXd& lambdas, double thresh,
                    int max_sweeps);

double scad_penalty(double abs_b, double lambda, double a);
double scad_derivative(double abs_b, double lambda, double a);

}  // namespace mbi
}  // namespace hetmtl
