# Late fusion of per-site DML estimates (Step 2), from a site_dml() fit or summary JSON files.

late_fusion <- function(x, penalty = c("group", "squared"), C = NULL, tau2 = NULL,
                        loss_matrix = c("vcov", "jacobian", "identity"), metric = c("matched", "euclidean"),
                        n_boot = 1000L, seed = NULL) {
  penalty <- match.arg(penalty); loss_matrix <- match.arg(loss_matrix); metric <- match.arg(metric)
  summaries <- if (inherits(x, "hetmtl_dml")) unname(unlist(x$summaries)) else {
    if (!is.character(x)) stop("x must be a site_dml() fit or a character vector of summary file paths", call. = FALSE)
    missing <- x[!file.exists(x)]
    if (length(missing)) stop(sprintf("summary file(s) not found: %s", paste(missing, collapse = ", ")), call. = FALSE)
    normalizePath(x)
  }
  res <- rinterop()$late_fusion(as.list(summaries), penalty = penalty, C = C, tau2 = tau2,
                                loss_matrix = loss_matrix, metric = metric, n_boot = as.integer(n_boot),
                                random_state = if (is.null(seed)) NULL else as.integer(seed))
  new_hetmtl_fusion(res, match.call())
}

rows_matrix <- function(x, ncol) matrix(unlist(x), ncol = ncol, byrow = TRUE)

new_hetmtl_fusion <- function(res, call) {
  sites <- unlist(res$sites); terms <- unlist(res$terms); d <- length(terms); K <- length(sites)
  coef <- rows_matrix(res$coef, d)
  table <- data.frame(site = rep(sites, each = d), term = rep(terms, K), estimate = as.vector(t(coef)),
                      fused = rep(unlist(res$fused), each = d), n = rep(as.integer(unlist(res$n)), each = d),
                      dml.estimate = as.vector(t(rows_matrix(res$dml_coef, d))),
                      dml.std.error = as.vector(t(rows_matrix(res$dml_se, d))), stringsAsFactors = FALSE)
  centre <- data.frame(term = terms, estimate = unlist(res$centre), postfusion.std.error = unlist(res$postfusion_se))
  boot <- NULL
  if (!is.null(res$se)) {
    table$std.error <- as.vector(t(rows_matrix(res$se, d)))
    centre$std.error <- unlist(res$centre_se)
  } else if (!is.null(res$boot_theta)) {
    boot <- list(theta = rows_matrix(res$boot_theta, K * d), centre = rows_matrix(res$boot_centre, d))
    table$std.error <- apply(boot$theta, 2, stats::sd)
    centre$std.error <- apply(boot$centre, 2, stats::sd)
  } else {
    table$std.error <- NA_real_; centre$std.error <- NA_real_
  }
  cv <- NULL
  if (!is.null(res$cv_results)) {
    cv <- as.data.frame(lapply(res$cv_results$data, unlist), check.names = FALSE)
  }
  structure(list(table = table, centre = centre, boot = boot, C = res$C, penalty = res$penalty,
                 inference = res$inference, heterogeneity = lapply(res$heterogeneity, unlist), cv = cv,
                 call = call, model = paste("late fusion,", res$penalty, "penalty"),
                 vcov = NULL),
            class = c("hetmtl_fusion", "hetmtl_fit"))
}

# Intervals of the fused estimates: Wald (squared; delta method, conditional on C) or bootstrap
# percentiles (group; approximate). quantile type 7 equals numpy's default.
fusion_intervals <- function(object, level) {
  a <- (1 - level) / 2
  tab <- object$table
  if (!is.null(object$boot)) {
    q <- apply(object$boot$theta, 2, stats::quantile, probs = c(a, 1 - a), type = 7, names = FALSE)
    qc <- apply(object$boot$centre, 2, stats::quantile, probs = c(a, 1 - a), type = 7, names = FALSE)
    list(site = t(q), centre = t(qc))
  } else {
    z <- stats::qnorm(1 - a)
    list(site = cbind(tab$estimate - z * tab$std.error, tab$estimate + z * tab$std.error),
         centre = cbind(object$centre$estimate - z * object$centre$std.error,
                        object$centre$estimate + z * object$centre$std.error))
  }
}

fit_table.hetmtl_fusion <- function(object, level = 0.95) {
  tab <- object$table
  ci <- fusion_intervals(object, level)$site
  tab$statistic <- tab$estimate / tab$std.error
  tab$p.value <- 2 * stats::pnorm(-abs(tab$statistic))
  tab$conf.low <- ci[, 1]; tab$conf.high <- ci[, 2]
  tab
}

vcov.hetmtl_fusion <- function(object, ...) {
  if (!is.null(object$boot)) {
    V <- stats::cov(object$boot$theta)
  } else {
    stop("vcov of a squared-penalty fusion: use the per-site standard errors (the full delta-method ",
         "covariance across sites is available from Python, LateFusion.vcov_)", call. = FALSE)
  }
  nm <- paste(object$table$site, object$table$term, sep = ":")
  dimnames(V) <- list(nm, nm)
  V
}

confint.hetmtl_fusion <- function(object, parm, level = 0.95, ...) {
  ci <- fusion_intervals(object, level)
  a <- (1 - level) / 2
  out <- rbind(ci$site, ci$centre)
  dimnames(out) <- list(c(paste(object$table$site, object$table$term, sep = ":"), paste("(centre)", object$centre$term, sep = ":")),
                        sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE)))
  if (!missing(parm)) out <- out[parm, , drop = FALSE]
  out
}

print.hetmtl_fusion <- function(x, ...) {
  cat(sprintf("<hetmtl_fusion> %s penalty, C = %.4g, %d of %d sites fused to the centre\n", x$penalty, x$C,
              sum(x$table$fused[!duplicated(x$table$site)]), length(unique(x$table$site))))
  print(x$table[, c("site", "term", "estimate", "std.error", "fused", "dml.estimate", "dml.std.error")], row.names = FALSE)
  cat("\nCentre:\n"); print(x$centre, row.names = FALSE)
  h <- x$heterogeneity
  cat(sprintf("\nHeterogeneity: Q = %.3g, I2 = %.1f%%, tau2 = %.3g\n", h$Q, 100 * h$I2, h$tau2))
  invisible(x)
}

plot.hetmtl_fusion <- function(x, level = 0.95, ...) {
  tab <- fit_table.hetmtl_fusion(x, level)
  term <- tab$term[1]
  tab <- tab[tab$term == term, ]
  z <- stats::qnorm(0.5 + level / 2)
  k <- nrow(tab); yy <- rev(seq_len(k))
  lo <- c(tab$dml.estimate - z * tab$dml.std.error, tab$conf.low)
  hi <- c(tab$dml.estimate + z * tab$dml.std.error, tab$conf.high)
  graphics::plot(range(lo, hi), c(0.5, k + 0.5), type = "n", yaxt = "n", ylab = "", xlab = term,
                 main = sprintf("Per-site DML (grey) and fused (black) %g%% intervals", 100 * level), ...)
  graphics::axis(2, at = yy, labels = tab$site, las = 1)
  graphics::segments(tab$dml.estimate - z * tab$dml.std.error, yy + 0.15, tab$dml.estimate + z * tab$dml.std.error, yy + 0.15, col = "grey50")
  graphics::points(tab$dml.estimate, yy + 0.15, pch = 1, col = "grey50")
  graphics::segments(tab$conf.low, yy - 0.15, tab$conf.high, yy - 0.15)
  graphics::points(tab$estimate, yy - 0.15, pch = ifelse(tab$fused, 19, 17))
  graphics::abline(v = x$centre$estimate[x$centre$term == term], lty = 2)
  invisible(x)
}
