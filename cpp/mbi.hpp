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
#include <limits>
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
  VectorXd grad;                // exact gradient of Q (the retained eigenvectors move with beta)
  VectorXd grad_fixed_truncation;  // gradient with the truncation T held fixed, C(beta) varying
  VectorXd grad_fixed_weight;   // gradient with C* and T held fixed (R's finite-difference target)
  MatrixXd gn_hessian;          // 2 G*' C*^{-1} G*  (Gauss-Newton curvature), p x p
  std::vector<int> n_moments;   // per group: moments before truncation (after dropping copies)
  std::vector<int> n_retained;  // per group: moments kept after truncation
  // With boundaries: outward normals (gradients of the constraint functions) of the truncation
  // boundaries within reach (an eigenvalue within 1e-6 relative of its threshold). Q is smooth
  // inside a piece of fixed retained counts and jumps across such a boundary.
  std::vector<VectorXd> boundary_normals;
};

struct PathOptions {
  double a = 3.7;
  double eps1 = 1e-3;      // |beta_j| below this is set to 0 after solving each lambda > 0
  double tol = 1e-8;       // stop when the largest step (standardised scale) is below this
  double stat_tol = 1e-6;  // converged: optimality residual on the support at most this
  // steps to a fit with RSS1 above this are refused (the path sets it to the null model's RSS1:
  // the QIF's spurious region, where huge residuals shrink Q, stays out of reach)
  double rss_cap = std::numeric_limits<double>::infinity();
  int max_iter = 500;      // proximal Newton iterations per lambda
  bool multi_start = true;     // greedy eliminations of small coefficients at each lambda
  bool lasso_restart = true;   // LLA restart with lasso weights where not identified
  bool backward_pass = false;  // also warm-start from the larger lambda; keep the best
  bool null_candidate = false; // also consider beta = 0 at every lambda
  int drop_candidates = 3; // elimination: smallest nonzero coefficients tried per round
  int drop_rounds = 2;     // elimination rounds per lambda
  int add_candidates = 3;  // addition: zero coefficients with the largest KKT violation tried
  int screen_iter = 25;    // iterations of the short solve that screens each elimination
  int threads = 1;         // threads for elimination/addition candidates (results do not depend on it)
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
  VectorXd stationarity;    // optimality residual on the support at each solution
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
  Evaluation evaluate(const VectorXd& beta, bool with_derivatives, bool boundaries = false) const;
  double qif(const VectorXd& beta) const { return evaluate(beta, false).Q; }
  double objective(const VectorXd& beta, double lambda, double a) const;
  // objective() plus the proximal anchor term of `opt` (the function the path solver minimises).
  double solver_objective(const VectorXd& beta, double lambda, const PathOptions& opt) const;
  // SCAD penalty plus the anchor term of `opt`.
  double solver_penalty(const VectorXd& beta, double lambda, const PathOptions& opt) const;
  // RSS1: sum over groups of the residual sum of squares averaged over the group's copies.
  double rss1(const VectorXd& beta) const;
  // Optimality residual on the support: the largest |r_j| over nonzero beta_j, r being the exact
  // gradient of the solver's objective (dQ/dbeta_j + SCAD'(|beta_j|) sign(beta_j) + mu (beta_j -
  // anchor_j)) plus the best nonnegative combination of the outward normals of the truncation
  // boundaries within reach (KKT of the piece; plain gradient where there are none).
  double stationarity(const VectorXd& beta, double lambda, const PathOptions& opt) const;
  double stationarity_of(const VectorXd& beta, double lambda, const PathOptions& opt,
                         const Evaluation& ev) const;
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
  // Single-coefficient additions (largest KKT violations), kept when they lower the objective.
  VectorXd improve_by_addition(const VectorXd& beta, double lambda, const PathOptions& opt,
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
