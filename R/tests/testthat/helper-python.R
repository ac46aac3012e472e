skip_if_no_hetmtl <- function() {
  if (!hetmtl_available()) skip("Python package hetmtl not available (set RETICULATE_PYTHON)")
}

make_sites <- function(n_sites = 3, n = 60, seed = 1) {
  set.seed(seed)
  do.call(rbind, lapply(seq_len(n_sites), function(k) {
    x1 <- rnorm(n); x2 <- rnorm(n)
    d <- rbinom(n, 1, plogis(0.5 * x1))
    data.frame(site = paste0("S", k), y = d * (1 + 0.2 * k) + x1 - x2 + rnorm(n),
               treat = d, x1 = x1, x2 = x2, grp = factor(sample(c("a", "b", "c"), n, TRUE)))
  }))
}
