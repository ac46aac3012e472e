#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>

#include "bindings.hpp"
#include "blockwise_nets.hpp"

namespace py = pybind11;

namespace hetmtl {
namespace {

using namespace blockwise;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

template <class T>
T item(const py::dict& d, const char* key, const char* what) {
  if (!d.contains(key)) throw py::key_error(std::string(what) + ": missing '" + key + "'");
  return d[key].cast<T>();
}

Step2Spec step2_spec(const py::dict& d) {
  Step2Spec s;
  s.p0 = item<int>(d, "p0", "Step-2 spec");
  s.P = item<int>(d, "P", "Step-2 spec");
  s.T = item<int>(d, "T", "Step-2 spec");
  s.width = item<int>(d, "width", "Step-2 spec");
  s.depth = item<int>(d, "depth", "Step-2 spec");
  const auto mode = item<std::string>(d, "dr_mode", "Step-2 spec");
  if (mode != "per_task" && mode != "sum_inside")
    throw py::value_error("dr_mode must be 'per_task' or 'sum_inside', got '" + mode + "'");
  s.per_task_dr = mode == "per_task";
  s.lambda_orth = item<float>(d, "lambda_orth", "Step-2 spec");
  s.lambda_imp = item<float>(d, "lambda_imp", "Step-2 spec");
  s.lambda_dr = item<float>(d, "lambda_dr", "Step-2 spec");
  s.imputed = item<std::vector<std::vector<int>>>(d, "imputed", "Step-2 spec");
  return s;
}

HBISpec hbi_spec(const py::dict& d) {
  HBISpec s;
  s.p0 = item<int>(d, "p0", "HBI spec");
  s.ps = item<int>(d, "ps", "HBI spec");
  s.width = item<int>(d, "width", "HBI spec");
  s.depth = item<int>(d, "depth", "HBI spec");
  s.heterogeneous = item<bool>(d, "heterogeneous", "HBI spec");
  s.orth_power = item<int>(d, "orth_power", "HBI spec");
  s.lambda_orth = item<float>(d, "lambda_orth", "HBI spec");
  return s;
}

// Parameters named as the torch networks name them, without the configuration axis:
// (rows, cols) or, per task, (T, rows, cols); row-major in numpy, column-major in the buffer.
std::vector<float> flatten(const Layout& layout, const py::dict& params) {
  std::vector<float> out(layout.size());
  for (const TensorSpec& s : layout.tensors()) {
    if (!params.contains(s.name)) throw py::key_error("missing parameter '" + s.name + "'");
    FloatArray a = params[s.name.c_str()].cast<FloatArray>();
    const bool ok = s.per_task ? (a.ndim() == 3 && a.shape(0) == s.lead && a.shape(1) == s.rows && a.shape(2) == s.cols)
                               : (a.ndim() == 2 && a.shape(0) == s.rows && a.shape(1) == s.cols);
    if (!ok) throw py::value_error("parameter '" + s.name + "' has the wrong shape");
    const float* src = a.data();
    for (int t = 0; t < s.lead; ++t)
      for (int r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.cols; ++c)
          out[s.offset + static_cast<std::size_t>(t) * s.rows * s.cols + static_cast<std::size_t>(c) * s.rows + r] =
              src[(static_cast<std::size_t>(t) * s.rows + r) * s.cols + c];
  }
  return out;
}

py::dict unflatten(const Layout& layout, const std::vector<float>& buf) {
  py::dict out;
  for (const TensorSpec& s : layout.tensors()) {
    std::vector<py::ssize_t> shape = {s.rows, s.cols};
    if (s.per_task) shape.insert(shape.begin(), s.lead);
    FloatArray a(shape);
    float* dst = a.mutable_data();
    for (int t = 0; t < s.lead; ++t)
      for (int r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.cols; ++c)
          dst[(static_cast<std::size_t>(t) * s.rows + r) * s.cols + c] =
              buf[s.offset + static_cast<std::size_t>(t) * s.rows * s.cols + static_cast<std::size_t>(c) * s.rows + r];
    out[s.name.c_str()] = a;
  }
  return out;
}

std::vector<TaskData> task_data(const py::dict& d, const char* what) {
  const auto x0 = item<std::vector<Mat>>(d, "x0", what);
  const auto xf = item<std::vector<Mat>>(d, "xf", what);
  const auto y = item<std::vector<Vec>>(d, "y", what);
  if (x0.size() != xf.size() || x0.size() != y.size())
    throw py::value_error(std::string(what) + ": x0, xf and y differ in their number of tasks");
  std::vector<TaskData> out(x0.size());
  for (std::size_t t = 0; t < x0.size(); ++t) {
    if (x0[t].rows() != y[t].size() || xf[t].rows() != y[t].size() || y[t].size() == 0)
      throw py::value_error(std::string(what) + ": task " + std::to_string(t) + " has mismatched or no rows");
    out[t] = {x0[t], xf[t], y[t]};
  }
  return out;
}

HBIData hbi_data(const py::dict& d, bool with_others, const char* what) {
  HBIData out;
  out.x0t = item<Mat>(d, "x0t", what);
  out.xst = item<Mat>(d, "xst", what);
  if (out.x0t.rows() != out.xst.rows() || out.x0t.rows() == 0)
    throw py::value_error(std::string(what) + ": x0t and xst must have the same, non-zero, number of rows");
  if (with_others) {
    out.x0m = item<Mat>(d, "x0m", what);
    if (out.x0m.cols() != out.x0t.cols() || out.x0m.rows() == 0)
      throw py::value_error(std::string(what) + ": x0m must have x0t's columns and some rows");
    out.prepare();
  }
  return out;
}

TrainOptions options(const py::dict& d) {
  TrainOptions o;
  o.max_epochs = item<int>(d, "max_epochs", "options");
  o.patience = item<int>(d, "patience", "options");
  o.lr = item<float>(d, "lr", "options");
  o.lr_step = item<int>(d, "lr_step", "options");
  o.lr_gamma = item<float>(d, "lr_gamma", "options");
  return o;
}

// Members (problem index, spec dict, parameter dict) parsed, trained without the GIL, returned
// as (best parameters, best loss, best epoch, epochs run).
template <class Net, class Problem, class Spec>
py::list train(const std::vector<Problem>& problems, const py::list& members, const py::dict& opt, int n_threads,
               Spec (*parse)(const py::dict&),
               std::vector<FitResult> (*run)(const std::vector<Problem>&, const std::vector<Member<Spec>>&,
                                             const TrainOptions&, int)) {
  std::vector<Member<Spec>> mem;
  std::vector<Layout> layouts;
  for (const auto& entry : members) {
    const auto [problem, spec, params] = entry.cast<std::tuple<int, py::dict, py::dict>>();
    const Spec s = parse(spec);
    Net net(s);
    mem.push_back({problem, s, flatten(net.layout(), params)});
    layouts.push_back(net.layout());
  }
  const TrainOptions o = options(opt);
  std::vector<FitResult> fits;
  {
    py::gil_scoped_release release;
    fits = run(problems, mem, o, n_threads);
  }
  py::list out;
  for (std::size_t i = 0; i < fits.size(); ++i)
    out.append(py::make_tuple(unflatten(layouts[i], fits[i].best), fits[i].best_loss, fits[i].best_epoch,
                              fits[i].epochs));
  return out;
}

}  // namespace

void bind_blockwise(py::module_& m) {
  m.def(
      "blockwise_step2_loss",
      [](const py::dict& spec, const py::dict& params, const py::dict& batch) {
        Step2Net net(step2_spec(spec));
        const auto theta = flatten(net.layout(), params);
        std::vector<float> grad(theta.size());
        Step2Terms terms;
        const float loss = net.loss(theta.data(), grad.data(), task_data(batch, "batch"), &terms);
        py::dict tr;
        tr["integ"] = terms.integ;
        tr["orth"] = terms.orth;
        tr["imp"] = terms.imp;
        tr["dr"] = terms.dr;
        return py::make_tuple(loss, tr, unflatten(net.layout(), grad));
      },
      py::arg("spec"), py::arg("params"), py::arg("batch"),
      "Step-2 penalised loss, its terms and gradients of one configuration on per-task batches.");
  m.def(
      "blockwise_hbi_loss",
      [](const py::dict& spec, const py::dict& params, const py::dict& batch) {
        const HBISpec s = hbi_spec(spec);
        HBINet net(s);
        const auto theta = flatten(net.layout(), params);
        std::vector<float> grad(theta.size());
        HBITerms terms;
        const float loss = net.loss(theta.data(), grad.data(), hbi_data(batch, s.heterogeneous, "batch"), &terms);
        py::dict tr;
        tr["pre"] = terms.pre;
        tr["recon"] = terms.recon;
        tr["orth"] = terms.orth;
        return py::make_tuple(loss, tr, unflatten(net.layout(), grad));
      },
      py::arg("spec"), py::arg("params"), py::arg("batch"),
      "HBI loss (L_pre + L_recon + lambda orth), its terms and gradients of one configuration.");
  m.def(
      "blockwise_hbi_impute",
      [](const py::dict& spec, const py::dict& params, const Mat& x0) {
        HBINet net(hbi_spec(spec));
        const auto theta = flatten(net.layout(), params);
        if (x0.cols() != item<int>(spec, "p0", "HBI spec"))
          throw py::value_error("anchor rows have " + std::to_string(x0.cols()) + " columns, the imputer expects " +
                                std::to_string(item<int>(spec, "p0", "HBI spec")));
        return net.impute(theta.data(), x0);
      },
      py::arg("spec"), py::arg("params"), py::arg("x0"),
      "G(E_c(x0)) of one HBI configuration: the imputed private block for anchor rows x0 (float32).");
  m.def(
      "blockwise_train_step2",
      [](const py::list& problems, const py::list& members, const py::dict& opt, int n_threads) {
        std::vector<Step2Problem> probs;
        for (const auto& p : problems) {
          const py::dict d = p.cast<py::dict>();
          probs.push_back({task_data(item<py::dict>(d, "train", "problem"), "train"),
                           task_data(item<py::dict>(d, "val", "problem"), "val"),
                           item<std::uint64_t>(d, "seed", "problem"), item<int>(d, "batch_size", "problem")});
        }
        return train<Step2Net>(probs, members, opt, n_threads, step2_spec, train_step2);
      },
      py::arg("problems"), py::arg("members"), py::arg("options"), py::arg("n_threads") = 1,
      "Train Step-2 configurations (problem index, spec, initial parameters), n_threads at a time; "
      "returns (best parameters, best validation loss, best epoch, epochs run) per member.");
  m.def(
      "blockwise_train_hbi",
      [](const py::list& problems, const py::list& members, const py::dict& opt, int n_threads) {
        std::vector<HBIProblem> probs;
        for (const auto& p : problems) {
          const py::dict d = p.cast<py::dict>();
          probs.push_back({hbi_data(item<py::dict>(d, "train", "problem"), true, "train"),
                           hbi_data(item<py::dict>(d, "val", "problem"), false, "val")});
        }
        return train<HBINet>(probs, members, opt, n_threads, hbi_spec, train_hbi);
      },
      py::arg("problems"), py::arg("members"), py::arg("options"), py::arg("n_threads") = 1,
      "Train HBI configurations full batch (problem index, spec, initial parameters), n_threads at a "
      "time; returns (best parameters, best validation loss, best epoch, epochs run) per member.");
}

}  // namespace hetmtl
