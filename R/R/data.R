# Built-in data and simulators, returned as plain data.frames.

columns_to_frame <- function(res) {
  cols <- unlist(res$columns)
  df <- as.data.frame(lapply(res$data[cols], function(v) {
    v <- unlist(lapply(v, function(x) if (is.null(x)) NA else x))
    if (is.numeric(v)) v[is.nan(v)] <- NA
    v
  }), check.names = FALSE, stringsAsFactors = FALSE)
  names(df) <- cols
  df
}

ihdp_data <- function() columns_to_frame(hetmtl_call("ihdp_frame"))

simulate_latefusion <- function(scenario = 1L, n_sites = 10L, eta = 0.5, n_range = c(40L, 80L), p = 5L,
                                theta0 = 1, outlier_frac = 0.1, nuisance_shift = 1, seed = NULL) {
  res <- hetmtl_call("simulate_latefusion",
    scenario = check_count(scenario, "scenario"), n_sites = check_count(n_sites, "n_sites"), eta = eta,
    n_range = as.list(check_count(n_range, "n_range", length = 2L)), p = check_count(p, "p"), theta0 = theta0,
    outlier_frac = outlier_frac, nuisance_shift = nuisance_shift, random_state = check_seed(seed))
  theta <- matrix(unlist(res$theta), ncol = res$d, byrow = TRUE)
  list(data = columns_to_frame(res), theta = theta, theta0 = unlist(res$theta0), outlier = unlist(res$outlier))
}
