#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "proximal.hpp"

namespace py = pybind11;

namespace hetmtl {

namespace {
CenterPenalty parse_penalty(const std::string& name) {
  if (name == "group_l2") return CenterPenalty::GroupL2;
  if (name == "l1") return CenterPenalty::L1;
  throw std::invalid_argument("penalty must be 'group_l2' or 'l1', got '" + name + "'");
}
}  // namespace

void bind_proximal(py::module_& m) {
  m.def(
      "prox_to_center",
      [](const Eigen::Ref<const MatrixXd>& Z, const Eigen::Ref<const VectorXd>& center,
         const Eigen::Ref<const VectorXd>& lam, const Eigen::Ref<const VectorXd>& step,
         const Eigen::Ref<const VectorXd>& weights, const std::string& penalty) {
        const CenterPenalty pen = parse_penalty(penalty);
        py::gil_scoped_release release;
        return prox_to_center(Z, center, lam, step, weights, pen);
      },
      py::arg("Z"), py::arg("center"), py::arg("lam"), py::arg("step"), py::arg("weights"),
      py::arg("penalty") = "group_l2",
      "Row-wise prox of t_k ||v - center|| at Z (K x m), t_k = step_k * lam_k * weights_k; "
      "penalty 'group_l2' (block soft-thresholding) or 'l1' (element-wise).");
  m.def(
      "geometric_median",
      [](const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& weights, int max_iter,
         double tol) {
        CenterResult r;
        {
          py::gil_scoped_release release;
          r = geometric_median(V, weights, max_iter, tol);
        }
        return py::make_tuple(r.center, r.n_iter, r.converged);
      },
      py::arg("V"), py::arg("weights"), py::arg("max_iter") = 100, py::arg("tol") = 1e-10,
      "Weighted geometric median of the rows of V (Weiszfeld, Vardi-Zhang step at data points): "
      "(center, n_iter, converged).");
  m.def("coordinate_median", &coordinate_median, py::arg("V"), py::arg("weights"),
        py::call_guard<py::gil_scoped_release>(), "Coordinate-wise weighted (lower) median of the rows of V.");
  m.def("weighted_mean", &weighted_mean, py::arg("V"), py::arg("weights"),
        py::call_guard<py::gil_scoped_release>(), "Weighted mean of the rows of V.");
  m.def(
      "center_penalty_value",
      [](const Eigen::Ref<const MatrixXd>& V, const Eigen::Ref<const VectorXd>& center,
         const Eigen::Ref<const VectorXd>& lam, const Eigen::Ref<const VectorXd>& weights,
         const std::string& penalty) {
        const CenterPenalty pen = parse_penalty(penalty);
        py::gil_scoped_release release;
        return center_penalty_value(V, center, lam, weights, pen);
      },
      py::arg("V"), py::arg("center"), py::arg("lam"), py::arg("weights"), py::arg("penalty") = "group_l2",
      "sum_k lam_k weights_k ||v_k - center||.");
  m.def(
      "prox_grad_center_quadratic",
      [](const Eigen::Ref<const MatrixXd>& stacked_grams, const Eigen::Ref<const MatrixXd>& h,
         const Eigen::Ref<const MatrixXd>& theta0, const Eigen::Ref<const VectorXd>& center0,
         const Eigen::Ref<const Eigen::VectorXi>& groups, const Eigen::Ref<const MatrixXd>& lam, double loss_scale,
         const std::string& penalty, bool joint, const std::string& center_method, int n_steps, double tol) {
        const CenterPenalty pen = parse_penalty(penalty);
        QuadraticCenterFit r;
        {
          py::gil_scoped_release release;
          r = prox_grad_center_quadratic(stacked_grams, h, theta0, center0, groups, lam, loss_scale, pen, joint,
                                         center_method, n_steps, tol);
        }
        return py::make_tuple(r.theta, r.center, r.n_iter, r.converged);
      },
      py::arg("stacked_grams"), py::arg("h"), py::arg("theta0"), py::arg("center0"), py::arg("groups"), py::arg("lam"),
      py::arg("loss_scale"), py::arg("penalty") = "group_l2", py::arg("joint") = true,
      py::arg("center_method") = "median", py::arg("n_steps") = 100, py::arg("tol") = 0.0,
      "Proximal gradient for s*sum_k(theta_k'G_k theta_k - 2h_k'theta_k) + sum_k sum_g lam[k,g]||theta_k[g] - c[g]|| "
      "(groups[j] = g or -1 unpenalised), then the exact centre update: (theta, center, n_iter, converged).");
  m.def("batched_max_eigenvalue", &batched_max_eigenvalue, py::arg("stacked_grams"), py::arg("m"),
        py::call_guard<py::gil_scoped_release>(),
        "Largest eigenvalue of each m x m block of a (K*m) x m stack of symmetric matrices.");
}

}  // namespace hetmtl
