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

ihdp_data <- function() columns_to_frame(rinterop()$ihdp_frame())

simulate_latefusion <- function(scenario = 1L, n_sites = 10L, eta = 0.5, n_range = c(40L, 80L), p = 5L,
                                theta0 = 1, outlier_frac = 0.1, nuisance_shift = 1, seed = NULL) {
  res <- rinterop()$simulate_latefusion(
    scenario = as.integer(scenario), n_sites = as.integer(n_sites), eta = eta, n_range = as.list(as.integer(n_range)),
    p = as.integer(p), theta0 = theta0, outlier_frac = outlier_frac, nuisance_shift = nuisance_shift,
    random_state = if (is.null(seed)) NULL else as.integer(seed))
  theta <- matrix(unlist(res$theta), ncol = res$d, byrow = TRUE)
  list(data = columns_to_frame(res), theta = theta, theta0 = unlist(res$theta0), outlier = unlist(res$outlier))
}
