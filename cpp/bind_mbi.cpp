#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings.hpp"
#include "mbi.hpp"

namespace py = pybind11;

namespace hetmtl {

void bind_mbi(py::module_& m) {
  using mbi::Problem;
  using Eigen::MatrixXd;
  using Eigen::VectorXd;
  m.def("mbi_lasso_path", &mbi::lasso_path, py::arg("X"), py::arg("y"), py::arg("lambdas"),
        py::arg("thresh") = 1e-7, py::arg("max_sweeps") = 100000,
        py::call_guard<py::gil_scoped_release>(),
        "Lasso path (1/2n)||y - b0 - X b||^2 + lam ||b||_1 by coordinate descent with covariance "
        "updates (glmnet's algorithm and convergence rule), warm-started along decreasing "
        "lambdas; returns p x L coefficients.");
  py::class_<Problem>(m, "MBIProblem",
                      "Penalised continuously updated QIF of MBI over imputed copies of groups.")
      .def(py::init([](const std::vector<VectorXd>& y,
                       const std::vector<std::vector<MatrixXd>>& copies,
                       const std::vector<std::vector<std::vector<int>>>& instruments,
                       const std::vector<std::vector<std::vector<int>>>& diff_cols, double eps3) {
             if (copies.size() != y.size() || instruments.size() != y.size() ||
                 diff_cols.size() != y.size())
               throw std::invalid_argument("y, copies, instruments and diff_cols differ in length");
             std::vector<mbi::Group> groups(y.size());
             for (std::size_t k = 0; k < y.size(); ++k) {
               groups[k].y = y[k];
               groups[k].copies = copies[k];
               groups[k].instruments = instruments[k];
               groups[k].diff_cols = diff_cols[k];
             }
             return Problem(std::move(groups), eps3);
           }),
           py::arg("y"), py::arg("copies"), py::arg("instruments"), py::arg("diff_cols"),
           py::arg("eps3") = 1e-8)
      .def_property_readonly("p", &Problem::p)
      .def_property_readonly("n", &Problem::n)
      .def(
          "evaluate",
          [](const Problem& self, const VectorXd& beta, bool boundaries) {
            mbi::Evaluation ev;
            {
              py::gil_scoped_release release;
              ev = self.evaluate(beta, true, boundaries);
            }

            py::dict out;
            out["Q"] = ev.Q;
            out["grad"] = ev.grad;
            out["grad_fixed_weight"] = ev.grad_fixed_weight;
            out["grad_fixed_truncation"] = ev.grad_fixed_truncation;
            out["gn_hessian"] = ev.gn_hessian;
            out["n_moments"] = ev.n_moments;
            out["n_retained"] = ev.n_retained;
            out["boundary_normals"] = ev.boundary_normals;
            return out;
          },
          py::arg("beta"), py::arg("boundaries") = false,
          "Q(beta), its exact gradient (the truncated weight matrix differentiated, retained "
          "eigenvectors included), the gradient with the truncation held fixed, the fixed-weight "
          "gradient, the Gauss-Newton curvature and the moment counts per group "
          "(standardised scale).")
      .def(
          "stationarity",
          [](const Problem& self, const VectorXd& beta, double lam, double a, double mu,
             std::optional<VectorXd> anchor) {
            mbi::PathOptions opt;
            opt.a = a;
            opt.mu = mu;
            opt.anchor = anchor ? *anchor : VectorXd::Zero(beta.size());
            py::gil_scoped_release release;
            return self.stationarity(beta, lam, opt);
          },
          py::arg("beta"), py::arg("lam"), py::arg("a") = 3.7, py::arg("mu") = 0.0,
          py::arg("anchor") = py::none(),
          "Optimality residual on the support: max over nonzero beta_j of |dQ/dbeta_j + "
          "SCAD'(|beta_j|) sign(beta_j) + mu (beta_j - anchor_j)| (exact gradient).")
      .def("qif", &Problem::qif, py::arg("beta"), py::call_guard<py::gil_scoped_release>())
      .def("objective", &Problem::objective, py::arg("beta"), py::arg("lam"), py::arg("a") = 3.7,
           py::call_guard<py::gil_scoped_release>(), "Q(beta) + sum_j SCAD_lam,a(|beta_j|).")
      .def("rss1", &Problem::rss1, py::arg("beta"), py::call_guard<py::gil_scoped_release>())
      .def("lambda_max", &Problem::lambda_max, py::arg("beta_start"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "solve",
          [](const Problem& self, const VectorXd& start, double lam, double a, double tol,
             int max_iter, double mu, std::optional<VectorXd> anchor, double stat_tol) {
            mbi::PathOptions opt;
            opt.stat_tol = stat_tol;
            opt.rss_cap = self.rss1(VectorXd::Zero(self.p()));
            opt.mu = mu;
            opt.anchor = anchor ? *anchor : start;
            opt.a = a;
            opt.tol = tol;
            opt.max_iter = max_iter;
            int iters = 0;
            bool conv = false;
            VectorXd beta;
            {
              py::gil_scoped_release release;
              beta = self.solve(start, lam, opt, &iters, &conv, {});
            }
            return py::make_tuple(beta, iters, conv);
          },
          py::arg("start"), py::arg("lam"), py::arg("a") = 3.7, py::arg("tol") = 1e-8,
          py::arg("max_iter") = 500, py::arg("mu") = 0.0, py::arg("anchor") = py::none(),
          py::arg("stat_tol") = 1e-6,
          "Minimise Q + SCAD (+ mu/2 ||beta - anchor||^2, anchor defaulting to start) at one "
          "lambda, never stepping to a fit with RSS1 above the null model's: "
          "(beta, n_iter, converged).")
      .def(
          "path",
          [](const Problem& self, const VectorXd& start, const VectorXd& lambdas, double a,
             double eps1, double tol, int max_iter, bool multi_start, bool lasso_restart,
             int drop_candidates, int drop_rounds, double mu, std::optional<VectorXd> anchor,
             int screen_iter, int threads, double stat_tol, int add_candidates,
             std::optional<double> rss_cap) {
            if (threads < 1) throw std::invalid_argument("threads must be >= 1");
            mbi::PathOptions opt;
            opt.stat_tol = stat_tol;
            opt.add_candidates = add_candidates;
            if (rss_cap) opt.rss_cap = *rss_cap;
            opt.screen_iter = screen_iter;
            opt.threads = threads;
            opt.mu = mu;
            opt.anchor = anchor ? *anchor : start;
            opt.multi_start = multi_start;
            opt.lasso_restart = lasso_restart;
            opt.drop_candidates = drop_candidates;
            opt.drop_rounds = drop_rounds;
            opt.a = a;
            opt.eps1 = eps1;
            opt.tol = tol;
            opt.max_iter = max_iter;
            mbi::PathResult r;
            {
              py::gil_scoped_release release;
              r = self.path(start, lambdas, opt);
            }
            py::dict out;
            out["beta"] = r.beta;
            out["objective"] = r.objective;
            out["qif"] = r.qif;
            out["rss1"] = r.rss1;
            out["stationarity"] = r.stationarity;
            out["n_iter"] = r.n_iter;
            out["converged"] = r.converged;
            return out;
          },
          py::arg("start"), py::arg("lambdas"), py::arg("a") = 3.7, py::arg("eps1") = 1e-3,
          py::arg("tol") = 1e-8, py::arg("max_iter") = 500, py::arg("multi_start") = true,
          py::arg("lasso_restart") = true, py::arg("drop_candidates") = 3, py::arg("drop_rounds") = 2,
          py::arg("mu") = 0.0, py::arg("anchor") = py::none(), py::arg("screen_iter") = 25,
          py::arg("threads") = 1, py::arg("stat_tol") = 1e-6, py::arg("add_candidates") = 3,
          py::arg("rss_cap") = py::none(),
          "SCAD path with warm starts in the given lambda order (standardised scale); mu > 0 adds "
          "the proximal anchor mu/2 ||beta - anchor||^2 (anchor defaults to start); steps to a fit "
          "with RSS1 above rss_cap (default: the null model's) are refused.");
}

}  // namespace hetmtl
