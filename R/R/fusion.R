# Late fusion of per-site DML estimates (Step 2), from a site_dml() fit, summary JSON files, or a
# data.frame of published estimates (site, estimate, se; optional coefficient, n).

late_fusion <- function(x, penalty = c("group", "squared"), C = NULL, tau2 = NULL,
                        loss_matrix = c("vcov", "jacobian", "identity"), metric = c("matched", "euclidean"),
                        ci = c("robust_eb", "bootstrap", "conditional"), centre_ci = c("hksj", "wald"),
                        site_covariates = NULL, kappa = NULL, n_boot = NULL, seed = NULL,
                        levels = c(0.8, 0.9, 0.95, 0.99), n_jobs = 1L) {
  penalty <- match.arg(penalty); loss_matrix <- match.arg(loss_matrix); metric <- match.arg(metric)
  ci <- match.arg(ci); centre_ci <- match.arg(centre_ci)
  if (!is.numeric(levels) || !length(levels) || any(!is.finite(levels)) || any(levels <= 0 | levels >= 1))
    input_error("levels must be numbers strictly between 0 and 1")
  C <- check_number(C, "C", low = 0, null_ok = TRUE)
  if (!is.null(tau2) && !(is.character(tau2) && length(tau2) == 1L)) tau2 <- check_number(tau2, "tau2", low = 0)
  kappa <- check_number(kappa, "kappa", low = 0, null_ok = TRUE)
  n_boot <- check_count(n_boot, "n_boot", low = 2, null_ok = TRUE)
  n_jobs <- check_n_jobs(n_jobs)
  seed <- check_seed(seed)
  treatment <- NULL
  summaries <- if (inherits(x, "hetmtl_dml")) {
    treatment <- x$treatment
    as.list(unname(unlist(x$summaries)))
  } else if (is.data.frame(x)) {
    need <- c("site", "estimate", "se")
    miss <- setdiff(need, names(x))
    if (length(miss)) input_error(sprintf("the estimates data.frame lacks column(s) %s", paste(miss, collapse = ", ")))
    cols <- intersect(c("site", "coefficient", "estimate", "se", "n"), names(x))
    out <- lapply(x[cols], function(v) if (is.factor(v)) as.character(v) else v)
    if ("site" %in% cols) out$site <- as.character(out$site)
    out
  } else {
    if (!is.character(x)) input_error("x must be a site_dml() fit, a data.frame of estimates or summary file paths")
    missing <- x[!file.exists(x)]
    if (length(missing)) input_error(sprintf("summary file(s) not found: %s", paste(missing, collapse = ", ")))
    as.list(normalizePath(x))
  }
  if (!is.null(site_covariates)) {  # rows as plain lists: no NumPy C-API on the R side
    m <- as.matrix(site_covariates)
    if (!is.numeric(m) || anyNA(m)) input_error("site_covariates must be a numeric matrix or data.frame without NA")
    site_covariates <- lapply(seq_len(nrow(m)), function(i) as.list(as.double(m[i, ])))
  }
  res <- hetmtl_call("late_fusion", summaries = summaries, levels = as.list(levels), penalty = penalty, C = C,
                     tau2 = tau2, loss_matrix = loss_matrix, metric = metric, ci = ci, centre_ci = centre_ci,
                     site_covariates = site_covariates, kappa = kappa, n_boot = n_boot, random_state = seed,
                     n_jobs = n_jobs)
  fit <- new_hetmtl_fusion(res, match.call())
  fit$treatment <- treatment
  if (inherits(x, "hetmtl_dml")) { fit$site_col <- x$site_col; fit$modifier_terms <- x$terms$modifier }
  fit
}

rows_matrix <- function(x, ncol) matrix(unlist(x), ncol = ncol, byrow = TRUE)

frame_from_py <- function(x) as.data.frame(lapply(x$data, function(v) unlist(lapply(v, function(e) if (is.null(e)) NA else e))),
                                           col.names = unlist(x$columns), check.names = FALSE, stringsAsFactors = FALSE)

new_hetmtl_fusion <- function(res, call) {
  sites <- unlist(res$sites); terms <- unlist(res$terms); d <- length(terms); K <- length(sites)
  coef <- rows_matrix(res$coef, d)
  table <- data.frame(site = rep(sites, each = d), term = rep(terms, K), estimate = as.vector(t(coef)),
                      fused = rep(unlist(res$fused), each = d),
                      n = if (isTRUE(res$n_given)) rep(as.integer(unlist(res$n)), each = d) else NA_integer_,
                      dml.estimate = as.vector(t(rows_matrix(res$dml_coef, d))),
                      dml.std.error = as.vector(t(rows_matrix(res$dml_se, d))), stringsAsFactors = FALSE)
  site_table <- frame_from_py(res$site_table)
  table$std.error <- if ("std err" %in% names(site_table)) site_table[["std err"]] else
    if ("robust EB std err" %in% names(site_table)) site_table[["robust EB std err"]] else
    if ("boot std err" %in% names(site_table)) site_table[["boot std err"]] else NA_real_
  levels <- unlist(res$levels)
  intervals <- lapply(res$intervals, function(m) rows_matrix(m, 3L)[, 2:3, drop = FALSE])
  names(intervals) <- format(levels)
  cv <- NULL
  if (!is.null(res$cv_results)) cv <- as.data.frame(lapply(res$cv_results$data, unlist), check.names = FALSE)
  structure(list(table = table, site_table = site_table, centre = frame_from_py(res$centre_table),
                 interval_estimate = unlist(res$interval_estimate), levels = levels, intervals = intervals,
                 C = res$C, penalty = res$penalty, ci = res$ci, header = lapply(res$header, unlist),
                 heterogeneity = lapply(res$heterogeneity, unlist), cv = cv, call = call,
                 model = paste("late fusion,", res$penalty, "penalty"),
                 vcov_sites = res$vcov_sites, vcov_boot = res$vcov_boot),
            class = c("hetmtl_fusion", "hetmtl_fit"))
}

fusion_level <- function(object, level) {
  check_level(level)
  i <- which(abs(object$levels - level) < 1e-12)
  if (!length(i))
    input_error(sprintf("intervals were computed at levels %s; refit with late_fusion(..., levels = %g)",
                 paste(object$levels, collapse = ", "), level))
  object$intervals[[i]]
}

# Site rows then the centre rows, as LateFusion.confint() orders them.
fusion_row_names <- function(object)
  c(paste(object$table$site, object$table$term, sep = ":"), paste("(centre)", object$centre$term, sep = ":"))

fit_table.hetmtl_fusion <- function(object, level = 0.95) {
  ci <- fusion_level(object, level)
  nsite <- nrow(object$table)
  tab <- object$table
  tab$ci.estimate <- object$interval_estimate[seq_len(nsite)]
  tab$conf.low <- ci[seq_len(nsite), 1]; tab$conf.high <- ci[seq_len(nsite), 2]
  tab$ci.method <- object$ci
  tab
}

vcov.hetmtl_fusion <- function(object, ...) {
  d <- length(unique(object$table$term)); K <- length(unique(object$table$site))
  nm <- paste(object$table$site, object$table$term, sep = ":")
  if (!is.null(object$vcov_sites)) {
    blocks <- lapply(object$vcov_sites, function(b) rows_matrix(b, d))
    V <- matrix(0, K * d, K * d)
    for (k in seq_len(K)) V[(k - 1) * d + seq_len(d), (k - 1) * d + seq_len(d)] <- blocks[[k]]
    note <- "delta-method covariance of the fused estimates given the site effects (block diagonal part)"
  } else if (!is.null(object$vcov_boot)) {
    V <- rows_matrix(object$vcov_boot, K * d)
    note <- "bootstrap covariance of the fused estimates (ci = \"bootstrap\")"
  } else {
    unsupported("the group penalty has no covariance matrix of its fused estimates (they are not linear in the ",
                "site estimates); refit with ci = \"bootstrap\" for a bootstrap covariance or penalty = \"squared\" ",
                "for the delta-method one; confint() gives the robust EB intervals")
  }
  dimnames(V) <- list(nm, nm)
  attr(V, "note") <- note
  V
}

fitted.hetmtl_fusion <- function(object, ...) coef(object)

residuals.hetmtl_fusion <- function(object, ...) {
  stats::setNames(object$table$dml.estimate - object$table$estimate, names(coef(object)))
}

nobs.hetmtl_fusion <- function(object, ...) length(unique(object$table$site))

glance.hetmtl_fusion <- function(x, ...) {
  h <- x$heterogeneity
  data.frame(penalty = x$penalty, C = x$C, ci = x$ci, n.sites = nobs(x),
             n.fused = sum(x$table$fused[!duplicated(x$table$site)]), Q = h$Q, I2 = h$I2, tau2 = h$tau2,
             treated = if (is.null(x$treatment)) NA_character_ else x$treatment$treated, stringsAsFactors = FALSE)
}

confint.hetmtl_fusion <- function(object, parm, level = 0.95, ...) {
  out <- fusion_level(object, level)
  dimnames(out) <- list(fusion_row_names(object), interval_names(level))
  if (!missing(parm)) out <- out[parm, , drop = FALSE]
  out
}

tidy.hetmtl_fusion <- function(x, conf.int = TRUE, conf.level = 0.95, ...) {
  tab <- fit_table.hetmtl_fusion(x, conf.level)
  cols <- c("site", "term", "estimate", "fused", "ci.estimate", "std.error", if (conf.int) c("conf.low", "conf.high"),
            "ci.method", "dml.estimate", "dml.std.error")
  tab[, cols]
}

summary.hetmtl_fusion <- function(object, level = 0.95, ...) {
  structure(list(table = fit_table.hetmtl_fusion(object, level), centre = object$centre, header = object$header,
                 call = object$call, level = level, model = object$model, treatment = object$treatment),
            class = "summary.hetmtl_fusion")
}

print.summary.hetmtl_fusion <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Call:\n"); print(x$call)
  cat(sprintf("\nModel: %s   (%g%% intervals)\n", x$model, 100 * x$level))
  cat("Treatment:", treatment_label(x$treatment), "\n")
  for (k in names(x$header)) cat(sprintf("  %s: %s\n", k, x$header[[k]]))
  cat("\nSites (interval columns: 'ci.estimate' is the estimate each interval surrounds):\n")
  print(x$table[, c("site", "term", "estimate", "fused", "ci.estimate", "conf.low", "conf.high", "dml.estimate",
                    "dml.std.error")], row.names = FALSE, digits = digits)
  cat("\nCentre (95% intervals):\n")
  print(x$centre, row.names = FALSE, digits = digits)
  invisible(x)
}

print.hetmtl_fusion <- function(x, ...) {
  cat(sprintf("<hetmtl_fusion> %s penalty, C = %.4g, %d of %d sites fused to the centre\n", x$penalty, x$C,
              sum(x$table$fused[!duplicated(x$table$site)]), length(unique(x$table$site))))
  cat("Treatment:", treatment_label(x$treatment), "\n")
  cat(sprintf("site intervals: %s\n", x$header[["site intervals"]]))
  print(x$table[, c("site", "term", "estimate", "std.error", "fused", "dml.estimate", "dml.std.error")], row.names = FALSE)
  cat("\nCentre:\n"); print(x$centre, row.names = FALSE)
  h <- x$heterogeneity
  cat(sprintf("\nHeterogeneity: Q = %.3g, I2 = %.1f%%, tau2 (DL) = %.3g\n", h$Q, 100 * h$I2, h$tau2))
  invisible(x)
}

plot.hetmtl_fusion <- function(x, level = 0.95, term = NULL, ...) {
  tab <- fit_table.hetmtl_fusion(x, level)
  terms <- unique(tab$term)
  if (is.null(term)) term <- terms else if (!all(term %in% terms))
    input_error(sprintf("unknown term(s) %s; the fit has %s", paste(setdiff(term, terms), collapse = ", "),
                 paste(terms, collapse = ", ")))
  z <- stats::qnorm(0.5 + level / 2)
  op <- graphics::par(mfrow = c(1L, length(term)), mar = c(4, max(6, 0.6 * max(nchar(tab$site))), 3, 1))
  on.exit(graphics::par(op))
  for (tm in term) {
    t <- tab[tab$term == tm, ]
    k <- nrow(t); yy <- rev(seq_len(k))
    lo <- c(t$dml.estimate - z * t$dml.std.error, t$conf.low)
    hi <- c(t$dml.estimate + z * t$dml.std.error, t$conf.high)
    graphics::plot(range(lo, hi, na.rm = TRUE), c(0.5, k + 0.5), type = "n", yaxt = "n", ylab = "", xlab = tm,
                   main = sprintf("DML (grey), %s (black), %g%%", x$ci, 100 * level), ...)
    graphics::axis(2, at = yy, labels = t$site, las = 1)
    graphics::segments(t$dml.estimate - z * t$dml.std.error, yy + 0.15, t$dml.estimate + z * t$dml.std.error, yy + 0.15, col = "grey50")
    graphics::points(t$dml.estimate, yy + 0.15, pch = 1, col = "grey50")
    graphics::segments(t$conf.low, yy - 0.15, t$conf.high, yy - 0.15)
    graphics::points(t$ci.estimate, yy - 0.15, pch = ifelse(t$fused, 19, 17))
    graphics::abline(v = x$centre$coef[x$centre$term == tm], lty = 2)
  }
  invisible(x)
}
