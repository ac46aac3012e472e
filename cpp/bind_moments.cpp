#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "moments.hpp"

namespace py = pybind11;

namespace hetmtl {

void bind_moments(py::module_& m) {
  m.def(
      "linear_score_moments",
      [](const Eigen::Ref<const MatrixXd>& phi, const Eigen::Ref<const VectorXd>& r,
         const Eigen::Ref<const VectorXd>& w) {
        ScoreMoments s;
        {
          py::gil_scoped_release release;
          s = linear_score_moments(phi, r, w);
        }
        py::dict out;
        out["theta"] = s.theta;
        out["J"] = s.J;
        out["b"] = s.b;
        out["Omega"] = s.Omega;
        out["Sigma"] = s.Sigma;
        out["vcov"] = s.vcov;
        out["rcond"] = s.rcond;
        return out;
      },
      py::arg("phi"), py::arg("r"), py::arg("w"),
      "Root, Jacobian, score covariance and sandwich variance of the linear score "
      "psi_i(theta) = phi_i (r_i - w_i phi_i' theta).");
  m.def("linear_scores", &linear_scores, py::arg("phi"), py::arg("r"), py::arg("w"),
        py::arg("theta"), py::call_guard<py::gil_scoped_release>(),
        "Per-observation scores psi_i(theta), n x d.");
  m.def(
      "quadratic_loss_coefficients",
      [](const Eigen::Ref<const MatrixXd>& phi, const Eigen::Ref<const VectorXd>& r,
         const Eigen::Ref<const VectorXd>& w, const Eigen::Ref<const VectorXd>& y2) {
        QuadraticLoss q = quadratic_loss_coefficients(phi, r, w, y2);
        return py::make_tuple(q.A, q.b, q.c);
      },
      py::arg("phi"), py::arg("r"), py::arg("w"), py::arg("y2"),
      "(A, b, c) of the held-out loss Q(theta) = c - 2 b'theta + theta' A theta.");
}

}  // namespace hetmtl
