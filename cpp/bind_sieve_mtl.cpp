#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "sieve_mtl.hpp"

namespace py = pybind11;

namespace hetmtl {

void bind_sieve_mtl(py::module_& m) {
  m.def(
      "sieve_mtl_fit",
      [](const Eigen::Ref<const Eigen::MatrixXd>& B, const Eigen::Ref<const Eigen::VectorXd>& y,
         const Eigen::Ref<const Eigen::VectorXi>& site, const Eigen::Ref<const Eigen::VectorXd>& lam,
         const Eigen::Ref<const Eigen::VectorXd>& penalized, const Eigen::Ref<const Eigen::VectorXd>& ridge_mask,
         double alpha, const std::string& loss, const Eigen::Ref<const Eigen::MatrixXd>& beta0,
         const Eigen::Ref<const Eigen::VectorXd>& center0, int max_iter, double tol) {
        SieveLoss kind;
        if (loss == "squared")
          kind = SieveLoss::Squared;
        else if (loss == "logistic")
          kind = SieveLoss::Logistic;
        else
          throw std::invalid_argument("loss must be 'squared' or 'logistic', got '" + loss + "'");
        SieveMTLFit r;
        {
          py::gil_scoped_release release;
          r = sieve_mtl_fit(B, y, site, lam, penalized, ridge_mask, alpha, kind, beta0, center0, max_iter, tol);
        }
        return py::make_tuple(r.beta, r.center, r.objective, r.residual, r.n_iter, r.converged);
      },
      py::arg("B"), py::arg("y"), py::arg("site"), py::arg("lam"), py::arg("penalized"), py::arg("ridge_mask"),
      py::arg("alpha"), py::arg("loss"), py::arg("beta0"), py::arg("center0"), py::arg("max_iter") = 5000,
      py::arg("tol") = 1e-9,
      "ARMUL-type multi-task sieve fit: min sum_k w_k [l_k(beta_k) + alpha/2||r o beta_k||^2 + lam_k||P(beta_k - "
      "beta_0)||] by FISTA; returns (beta K x q, center q, objective, residual, n_iter, converged).");
}

}  // namespace hetmtl
