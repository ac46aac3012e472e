// Registration functions: one bind_<concept>.cpp per concept, all called from module.cpp.
#pragma once
#include <pybind11/pybind11.h>

namespace hetmtl {
void bind_moments(pybind11::module_& m);
void bind_fusion(pybind11::module_& m);
void bind_proximal(pybind11::module_& m);
void bind_mbi(pybind11::module_& m);
void bind_sieve_mtl(pybind11::module_& m);
void bind_blockwise(pybind11::module_& m);
}  // namespace hetmtl
