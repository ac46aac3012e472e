// hetmtl._core: numeric kernels of hetmtl. Python front ends live in src/hetmtl/.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m, pybind11::mod_gil_not_used()) {
  m.doc() = "hetmtl numeric kernels (Eigen); see the Python front ends for documentation.";
  hetmtl::bind_moments(m);
  hetmtl::bind_fusion(m);
  hetmtl::bind_proximal(m);
  hetmtl::bind_mbi(m);
  hetmtl::bind_sieve_mtl(m);
  hetmtl::bind_blockwise(m);
}
