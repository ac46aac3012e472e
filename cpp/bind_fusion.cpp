// Bindings of the late-fusion kernels (cpp/fusion.*). Arrays cross as numpy:
// theta (K, d), stacked matrices (K, d, d), weights (K,). The front end is
// hetmtl.latefusion.fusion.LateFusion.
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include <cstring>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "fusion.hpp"

namespace py = pybind11;

namespace hetmtl {

namespace {
using fusion::MatrixXd;
using fusion::VectorXd;
using Arr = py::array_t<double, py::array::c_style | py::array::forcecast>;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::vector<MatrixXd> to_stack(const Arr& a, const char* name) {
  if (a.ndim() != 3 || a.shape(1) != a.shape(2))
    throw std::invalid_argument(std::string(name) + " must have shape (K, d, d)");
  const py::ssize_t K = a.shape(0), d = a.shape(1);
  std::vector<MatrixXd> out(K);
  for (py::ssize_t k = 0; k < K; ++k)
    out[k] = Eigen::Map<const RowMat>(a.data() + k * d * d, d, d);
  return out;
}

// (K, d) C-order <-> d x K column-major: the same memory layout.
MatrixXd to_columns(const Arr& a, const char* name) {
  if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must have shape (K, d)");
  return Eigen::Map<const MatrixXd>(a.data(), a.shape(1), a.shape(0));
}

py::array_t<double> from_columns(const MatrixXd& m) {
  py::array_t<double> out({m.cols(), m.rows()});
  std::memcpy(out.mutable_data(), m.data(), sizeof(double) * m.size());
  return out;
}

py::array_t<double> from_stack(const std::vector<MatrixXd>& v, py::ssize_t d) {
  py::array_t<double> out({static_cast<py::ssize_t>(v.size()), d, d});
  auto r = out.mutable_unchecked<3>();
  for (py::ssize_t k = 0; k < static_cast<py::ssize_t>(v.size()); ++k)
    for (py::ssize_t i = 0; i < d; ++i)
      for (py::ssize_t j = 0; j < d; ++j) r(k, i, j) = v[k](i, j);
  return out;
}

py::dict solution_dict(const fusion::Solution& s) {
  py::dict out;
  out["centre"] = s.centre;
  out["theta"] = from_columns(s.theta);
  py::array_t<bool> fused(static_cast<py::ssize_t>(s.fused.size()));
  for (size_t k = 0; k < s.fused.size(); ++k) fused.mutable_data()[k] = s.fused[k] != 0;
  out["fused"] = fused;
  out["objective"] = s.objective;
  out["n_iter"] = s.iterations;
  out["converged"] = s.converged;
  return out;
}

fusion::Options options(double tol, int max_iter, int threads) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  fusion::Options o;
  o.tol = tol;
  o.max_iter = max_iter;
  o.threads = threads;
  return o;
}
}  // namespace

void bind_fusion(py::module_& m) {
  using fusion::Problem;

  m.def(
      "fusion_site_matrices",
      [](const Arr& J, const Arr& Omega, const VectorXd& n, const std::string& loss_matrix) {
        auto Js = to_stack(J, "J");
        auto Os = to_stack(Omega, "Omega");
        const auto kind = fusion::parse_loss_matrix(loss_matrix);
        fusion::SiteMatrices sm;
        {
          py::gil_scoped_release release;
          sm = fusion::site_matrices(Js, Os, n, kind);
        }
        const py::ssize_t d = J.shape(1);
        if (sm.bad_site >= 0)
          return py::tuple(py::make_tuple(py::none(), py::none(), sm.bad_site, sm.reason));
        return py::tuple(py::make_tuple(from_stack(sm.H, d), from_stack(sm.V, d), -1, std::string()));
      },
      py::arg("J"), py::arg("Omega"), py::arg("n"), py::arg("loss_matrix") = "vcov",
      "(H, V, bad_site, reason): loss matrices H_k ('vcov': J' Omega^-1 J; 'jacobian': -sym(J); "
      "'identity') and V_k = J^-1 Omega J^-T / n_k. bad_site >= 0 names the first site whose "
      "matrices are not positive definite (then H and V are None).");

  py::class_<Problem>(m, "FusionProblem",
                      "Late-fusion objective sum_k w_k [1/2 (t_k - that_k)' H_k (t_k - that_k) + "
                      "pen_k(t_k - t_0)] with lambda_k = C * shape_k.")
      .def(py::init([](const Arr& theta_hat, const Arr& H, const VectorXd& w, const VectorXd& shape) {
             return new Problem(to_columns(theta_hat, "theta_hat"), to_stack(H, "H"), w, shape);
           }),
           py::arg("theta_hat"), py::arg("H"), py::arg("w"), py::arg("shape"))
      .def_property_readonly("K", &Problem::K)
      .def_property_readonly("d", &Problem::d)
      .def(
          "solve",
          [](const Problem& p, double C, const std::string& penalty, const std::string& metric,
             std::optional<VectorXd> start, double tol, int max_iter, int threads) {
            const auto pen = fusion::parse_penalty(penalty, metric);
            fusion::Solution s;
            {
              py::gil_scoped_release release;
              s = p.solve(C, pen, start ? &*start : nullptr, options(tol, max_iter, threads));
            }
            return solution_dict(s);
          },
          py::arg("C"), py::arg("penalty") = "group", py::arg("metric") = "matched",
          py::arg("start") = py::none(), py::arg("tol") = 1e-12, py::arg("max_iter") = 1000, py::arg("threads") = 1,
          "Fused estimates at one C: dict(centre, theta (K, d), fused, objective, n_iter, converged).")
      .def(
          "path",
          [](const Problem& p, const std::vector<double>& C_grid, const std::string& penalty,
             const std::string& metric, double tol, int max_iter, int threads) {
            const auto pen = fusion::parse_penalty(penalty, metric);
            std::vector<fusion::Solution> sols;
            {
              py::gil_scoped_release release;
              sols = p.path(C_grid, pen, options(tol, max_iter, threads));
            }
            const py::ssize_t nC = sols.size(), K = p.K(), d = p.d();
            py::array_t<double> centre({nC, d}), theta({nC, K, d});
            py::array_t<bool> fused({nC, K});
            py::array_t<int> n_iter(nC);
            py::array_t<bool> conv(nC);
            for (py::ssize_t i = 0; i < nC; ++i) {
              std::memcpy(centre.mutable_data() + i * d, sols[i].centre.data(), sizeof(double) * d);
              std::memcpy(theta.mutable_data() + i * K * d, sols[i].theta.data(), sizeof(double) * K * d);
              for (py::ssize_t k = 0; k < K; ++k) fused.mutable_data()[i * K + k] = sols[i].fused[k] != 0;
              n_iter.mutable_data()[i] = sols[i].iterations;
              conv.mutable_data()[i] = sols[i].converged;
            }
            py::dict out;
            out["C"] = C_grid;
            out["centre"] = centre;
            out["theta"] = theta;
            out["fused"] = fused;
            out["n_iter"] = n_iter;
            out["converged"] = conv;
            return out;
          },
          py::arg("C_grid"), py::arg("penalty") = "group", py::arg("metric") = "matched",
          py::arg("tol") = 1e-12, py::arg("max_iter") = 1000, py::arg("threads") = 1,
          "Solutions along C_grid, each warm-started at the previous centre.")
      .def(
          "path_losses",
          [](const Problem& p, const std::vector<double>& C_grid, const std::string& penalty,
             const std::string& metric, const Arr& A, const Arr& b, const VectorXd& c, const VectorXd& lw,
             double tol, int max_iter, int threads) {
            const auto pen = fusion::parse_penalty(penalty, metric);
            auto As = to_stack(A, "A");
            MatrixXd bs = to_columns(b, "b");
            std::vector<double> out;
            {
              py::gil_scoped_release release;
              out = p.path_losses(C_grid, pen, As, bs, c, lw, options(tol, max_iter, threads));
            }
            return out;
          },
          py::arg("C_grid"), py::arg("penalty"), py::arg("metric"), py::arg("A"), py::arg("b"),
          py::arg("c"), py::arg("loss_weights"), py::arg("tol") = 1e-12, py::arg("max_iter") = 1000, py::arg("threads") = 1,
          "Held-out losses sum_k lw_k (c_k - 2 b_k' t_k + t_k' A_k t_k) of the fused t_k along C_grid.")
      .def(
          "objective",
          [](const Problem& p, const Arr& theta, const VectorXd& centre, double C, const std::string& penalty,
             const std::string& metric) {
            return p.objective(to_columns(theta, "theta"), centre, C, fusion::parse_penalty(penalty, metric));
          },
          py::arg("theta"), py::arg("centre"), py::arg("C"), py::arg("penalty") = "group",
          py::arg("metric") = "matched", "Objective value at (theta (K, d), centre).")
      .def(
          "squared_map",
          [](const Problem& p, double C) {
            std::vector<MatrixXd> P, G;
            p.squared_map(C, P, G);
            return py::make_tuple(from_stack(P, p.d()), from_stack(G, p.d()));
          },
          py::arg("C"),
          "(P, G) of the squared-penalty linear map: t_0 = sum_j G_j that_j, t_k = P_k that_k + (I - P_k) t_0.")
      .def(
          "squared_covariance",
          [](const Problem& p, double C, const Arr& V) {
            auto Vs = to_stack(V, "V");
            std::vector<MatrixXd> cov_sites, cross;
            MatrixXd cov_centre;
            {
              py::gil_scoped_release release;
              p.squared_covariance(C, Vs, cov_sites, cov_centre, cross);
            }
            return py::make_tuple(from_stack(cov_sites, p.d()), cov_centre, from_stack(cross, p.d()));
          },
          py::arg("C"), py::arg("V"),
          "(Cov(t_k) (K, d, d), Cov(t_0) (d, d), Cov(t_k, t_0) (K, d, d)) of the squared-penalty map "
          "given site covariances V (exact delta method, conditional on C).")
      .def(
          "bootstrap",
          [](const Problem& p, const Arr& V, double C, const std::string& penalty, const std::string& metric,
             int n_boot, uint64_t seed, double tol, int max_iter, int threads) {
            const auto pen = fusion::parse_penalty(penalty, metric);
            auto Vs = to_stack(V, "V");
            Problem::Bootstrap bs;
            {
              py::gil_scoped_release release;
              bs = p.bootstrap(Vs, C, pen, n_boot, seed, options(tol, max_iter, threads));
            }
            const py::ssize_t B = n_boot, K = p.K(), d = p.d();
            py::array_t<double> theta({B, K, d});
            for (py::ssize_t b = 0; b < B; ++b)
              std::memcpy(theta.mutable_data() + b * K * d, bs.theta[b].data(), sizeof(double) * K * d);
            py::dict out;
            out["centre"] = MatrixXd(bs.centre);
            out["theta"] = theta;
            out["fused_count"] = bs.fused_count;
            out["n_not_converged"] = bs.n_not_converged;
            return out;
          },
          py::arg("V"), py::arg("C"), py::arg("penalty") = "group", py::arg("metric") = "matched",
          py::arg("n_boot") = 1000, py::arg("seed") = 0, py::arg("tol") = 1e-10, py::arg("max_iter") = 1000, py::arg("threads") = 1,
          "Parametric bootstrap: draws that_k* ~ N(that_k, V_k), refits with the same C; "
          "dict(centre (B, d), theta (B, K, d), fused_count (K,), n_not_converged).");
}

}  // namespace hetmtl
