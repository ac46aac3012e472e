#pragma once
// Small fork-join helper shared by the kernels that use threads.

#include <exception>
#include <thread>
#include <vector>

namespace hetmtl {

// Run fn(i) for i = 0..n-1, each on its own thread (i = 0 on the calling thread), and wait for
// all of them; an exception thrown by any fn(i) is rethrown in the caller once all have finished.
template <class Fn>
void run_on_threads(int n, Fn&& fn) {
  std::vector<std::exception_ptr> errors(n > 0 ? n : 0);
  auto guarded = [&fn, &errors](int i) {
    try {
      fn(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(n > 1 ? n - 1 : 0);
  for (int i = 1; i < n; ++i) pool.emplace_back(guarded, i);
  if (n > 0) guarded(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace hetmtl
