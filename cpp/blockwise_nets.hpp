#pragma once
// MTL-HMB networks (Step 1 HBI and Step 2 heterogeneous MTL) trained one configuration at a time:
// forward, hand-written backward, Adam and per-configuration early stopping, all in float32.
// Each configuration runs the same code whatever else is trained beside it, so a grid trained on
// several threads gives bit-for-bit the fits of training its configurations one by one.

#include <Eigen/Dense>

#include <cstdint>
#include <string>
#include <vector>

namespace hetmtl::blockwise {

using Mat = Eigen::MatrixXf;
using Vec = Eigen::VectorXf;

// A named parameter tensor inside a flat float buffer: `lead` slices (one per task when
// `per_task`), each rows x cols, column-major.
struct TensorSpec {
  std::string name;
  bool per_task;
  int lead;
  int rows;
  int cols;
  std::size_t offset;
};

class Layout {
 public:
  int add(const std::string& name, int rows, int cols, int lead = 0);
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  std::size_t size() const { return size_; }

 private:
  std::vector<TensorSpec> tensors_;
  std::size_t size_ = 0;
};

// One MLP: weight and bias tensor indices per layer; ReLU after every layer but the last unless
// relu_last.
struct Mlp {
  std::vector<int> W, b;
  bool relu_last = false;
};

// Adds the layers <name><k>.W (in or hidden rows) and <name><k>.b of a depth-layer MLP to the
// layout (per task when lead > 0) and returns their indices.
Mlp add_mlp(Layout& layout, const std::string& name, int in, int hidden, int out, int depth, int lead = 0,
            bool relu_last = false);

// ---------------------------------------------------------------------------------- Step 2
struct TaskData {
  Mat x0, xf;  // rows are observations
  Vec y;
};

struct Step2Spec {
  int p0 = 0, P = 0, T = 0, width = 0, depth = 0;
  bool per_task_dr = true;  // R_dr per task (paper Eq. 8) or summed inside the norm (code)
  float lambda_orth = 0, lambda_imp = 0, lambda_dr = 0;
  std::vector<std::vector<int>> imputed;  // per task: imputed input columns (R_imp)
};

struct Step2Terms {
  float integ = 0, orth = 0, imp = 0, dr = 0;
};

class Step2Net {
 public:
  explicit Step2Net(const Step2Spec& spec);
  const Layout& layout() const { return layout_; }
  // Penalised loss on per-task batches; `grad` (the layout's size, overwritten) when not null.
  float loss(const float* theta, float* grad, const std::vector<TaskData>& batch, Step2Terms* terms = nullptr);
  // Sum over tasks of the mean squared error (the early-stopping criterion), accumulated in float64.
  double val_loss(const float* theta, const std::vector<TaskData>& val);

 private:
  struct Cache {
    std::vector<Mat> ac, au, ho, hr;
    Mat z;
    Vec yhat;
  };
  void forward(const float* th, int t, const TaskData& d, Cache& c) const;
  float regularisers(const float* th, float* g, Step2Terms* terms) const;

  Step2Spec s_;
  Layout layout_;
  Mlp enc_c_, enc_u_;  // shared encoder; task encoders (tensor slice t of each layer)
  std::vector<int> g_W_, g_b_, r_W_, r_b_, rs_W_;
  int gout_W_, gout_b_, rout_W_, rout_b_;
  std::vector<Cache> cache_;
};

// ---------------------------------------------------------------------------------- Step 1 (HBI)
struct HBIData {
  Mat x0t, xst, x0m;  // observing task's anchor and private rows, the other tasks' anchor rows
  Mat x0;             // [x0t; x0m], filled by prepare()
  void prepare();
};

struct HBISpec {
  int p0 = 0, ps = 0, width = 0, depth = 1;
  bool heterogeneous = true;
  int orth_power = 1;
  float lambda_orth = 0;
};

struct HBITerms {
  float pre = 0, recon = 0, orth = 0;
};

class HBINet {
 public:
  explicit HBINet(const HBISpec& spec);
  const Layout& layout() const { return layout_; }
  float loss(const float* theta, float* grad, const HBIData& d, HBITerms* terms = nullptr);
  double val_loss(const float* theta, const HBIData& val);  // mean squared imputation error (float64 sum)
  Mat impute(const float* theta, const Mat& x0);            // G(E_c(x0))

 private:
  HBISpec s_;
  Layout layout_;
  Mlp Ec_, Et_, Em_, D_, G_;
  std::vector<Mat> a_c_, a_t_, a_m_, a_d_, a_g_;
  Mat dec_in_;
};

// ---------------------------------------------------------------------------------- training
struct TrainOptions {
  int max_epochs = 25000;
  int patience = 30;
  float lr = 1e-3f;
  int lr_step = 0;  // 0: constant learning rate; else multiplied by lr_gamma every lr_step epochs
  float lr_gamma = 0.95f;
};

struct FitResult {
  std::vector<float> best;  // parameters at the best validation epoch
  double best_loss = 0;
  int best_epoch = -1;
  int epochs = 0;
};

struct Step2Problem {
  std::vector<TaskData> train, val;
  std::uint64_t seed = 0;  // mini-batch order, shared by every configuration
  int batch_size = 16;     // rows per task and step; 0 = full batch
};

struct HBIProblem {
  HBIData train, val;
};

template <class Spec>
struct Member {
  int problem;
  Spec spec;
  std::vector<float> theta;  // initial parameters in the spec's layout
};

// Train every member (in the given order, n_threads at a time); results in member order.
std::vector<FitResult> train_step2(const std::vector<Step2Problem>& problems,
                                   const std::vector<Member<Step2Spec>>& members, const TrainOptions& opt,
                                   int n_threads);
std::vector<FitResult> train_hbi(const std::vector<HBIProblem>& problems, const std::vector<Member<HBISpec>>& members,
                                 const TrainOptions& opt, int n_threads);

}  // namespace hetmtl::blockwise
