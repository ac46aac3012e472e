# S3 methods shared by hetmtl fits. Objects are plain lists: they print and save without Python.

fit_table <- function(object, level = 0.95) UseMethod("fit_table")

fit_table.default <- function(object, level = 0.95) {
  tab <- object$table
  z <- stats::qnorm(0.5 + level / 2)
  tab$statistic <- tab$estimate / tab$std.error
  tab$p.value <- 2 * stats::pnorm(-abs(tab$statistic))
  tab$conf.low <- tab$estimate - z * tab$std.error
  tab$conf.high <- tab$estimate + z * tab$std.error
  tab
}

coef.hetmtl_fit <- function(object, ...) {
  stats::setNames(object$table$estimate, paste(object$table$site, object$table$term, sep = ":"))
}

vcov.hetmtl_fit <- function(object, ...) {
  blocks <- object$vcov
  nm <- unlist(lapply(blocks, rownames), use.names = FALSE)
  V <- matrix(0, length(nm), length(nm), dimnames = list(nm, nm))
  for (b in blocks) V[rownames(b), colnames(b)] <- b
  V
}

confint.hetmtl_fit <- function(object, parm, level = 0.95, ...) {
  tab <- fit_table(object, level)
  a <- (1 - level) / 2
  ci <- cbind(tab$conf.low, tab$conf.high)
  dimnames(ci) <- list(paste(tab$site, tab$term, sep = ":"), sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE)))
  if (!missing(parm)) ci <- ci[parm, , drop = FALSE]
  ci
}

as.data.frame.hetmtl_fit <- function(x, row.names = NULL, optional = FALSE, level = 0.95, ...) {
  fit_table(x, level)
}

tidy.hetmtl_fit <- function(x, conf.int = TRUE, conf.level = 0.95, ...) {
  tab <- fit_table(x, conf.level)
  cols <- c("site", "term", "estimate", "std.error", "statistic", "p.value", if (conf.int) c("conf.low", "conf.high"))
  tab[, cols]
}

summary.hetmtl_fit <- function(object, level = 0.95, ...) {
  structure(list(table = fit_table(object, level), model = object$model, call = object$call, level = level,
                 centre = object$centre),
            class = "summary.hetmtl_fit")
}

print.summary.hetmtl_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Call:\n"); print(x$call)
  cat(sprintf("\nModel: %s   (%g%% intervals)\n\n", x$model, 100 * x$level))
  tab <- x$table
  for (s in unique(tab$site)) {
    t <- tab[tab$site == s, ]
    m <- cbind(Estimate = t$estimate, `Std. Error` = t$std.error, `z value` = t$statistic, `Pr(>|z|)` = t$p.value)
    rownames(m) <- t$term
    cat(sprintf("Site %s (n = %d)%s\n", s, t$n[1], if (!is.null(t$fused) && t$fused[1]) ", fused to the centre" else ""))
    stats::printCoefmat(m, digits = digits, has.Pvalue = TRUE, P.values = TRUE, signif.legend = FALSE)
    cat("\n")
  }
  if (!is.null(x$centre)) {
    cat("Centre (common component):\n")
    print(x$centre, row.names = FALSE, digits = digits)
  }
  invisible(x)
}

print.hetmtl_fit <- function(x, ...) {
  cat(sprintf("<%s> %s fit, %d site(s)\n", class(x)[1], x$model, length(unique(x$table$site))))
  print(x$table[, c("site", "term", "estimate", "std.error", "n")], row.names = FALSE)
  invisible(x)
}
