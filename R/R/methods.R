# S3 methods shared by hetmtl fits. Objects are plain lists: they print and save without Python.

fit_table <- function(object, level = 0.95) UseMethod("fit_table")

fit_table.default <- function(object, level = 0.95) {
  check_level(level)
  tab <- object$table
  z <- stats::qnorm(0.5 + level / 2)
  tab$statistic <- tab$estimate / tab$std.error
  tab$p.value <- 2 * stats::pnorm(-abs(tab$statistic))
  tab$conf.low <- tab$estimate - z * tab$std.error
  tab$conf.high <- tab$estimate + z * tab$std.error
  tab
}

interval_names <- function(level) {
  a <- (1 - level) / 2
  sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE, digits = 3))
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
  check_level(level)
  tab <- fit_table(object, level)
  ci <- cbind(tab$conf.low, tab$conf.high)
  dimnames(ci) <- list(paste(tab$site, tab$term, sep = ":"), interval_names(level))
  if (!missing(parm)) ci <- ci[parm, , drop = FALSE]
  ci
}

nobs.hetmtl_fit <- function(object, ...) {
  if (!is.null(object$nobs)) return(object$nobs)
  sum(object$table$n[!duplicated(object$table$site)])
}

fitted.hetmtl_fit <- function(object, ...) {
  unsupported("site_dml() fits estimate treatment effects, not an outcome model: there are no fitted values ",
              "(the cross-fitted nuisance predictions stay in Python's SiteDML); use coef() or predict() for the effects")
}

residuals.hetmtl_fit <- function(object, ...) {
  unsupported("site_dml() fits estimate treatment effects, not an outcome model: there are no residuals ",
              "(the cross-fitted nuisance residuals stay in Python's SiteDML)")
}

# Treatment effect of every row of newdata at its site: Z'theta_site (plr/ate: the site's effect).
predict.hetmtl_fit <- function(object, newdata, se.fit = FALSE, ...) {
  site_col <- object$site_col %||% "site"
  tab <- object$table
  if (missing(newdata) || is.null(newdata)) {
    out <- stats::setNames(tab$estimate, paste(tab$site, tab$term, sep = ":"))
    return(if (se.fit) list(fit = out, se.fit = stats::setNames(tab$std.error, names(out))) else out)
  }
  if (!is.data.frame(newdata)) input_error("newdata must be a data.frame")
  if (!site_col %in% names(newdata)) input_error(sprintf("newdata has no site column '%s'", site_col))
  s <- as.character(newdata[[site_col]])
  unknown <- setdiff(unique(s), unique(tab$site))
  if (length(unknown)) input_error(sprintf("newdata has site(s) not in the fit: %s", paste(unknown, collapse = ", ")))
  terms <- unique(tab$term)
  if (length(terms) == 1L && terms %in% c("theta", "ATE")) {
    Z <- matrix(1, nrow(newdata), 1L)
  } else {
    tt <- object$modifier_terms %||% object$terms$modifier
    if (is.null(tt)) unsupported("this fit does not keep its modifier formula; predict needs a site_dml() fit")
    tt <- stats::delete.response(tt)
    mf <- stats::model.frame(tt, newdata, xlev = object$modifier_xlevels, na.action = stats::na.fail)
    Z <- cbind(1, stats::model.matrix(tt, mf)[, -1, drop = FALSE])
  }
  fit <- numeric(nrow(newdata)); se <- numeric(nrow(newdata))
  for (k in unique(s)) {
    i <- which(s == k)
    b <- tab$estimate[tab$site == k]
    fit[i] <- drop(Z[i, , drop = FALSE] %*% b)
    V <- object$vcov[[k]]
    se[i] <- if (is.null(V)) NA_real_ else sqrt(rowSums((Z[i, , drop = FALSE] %*% V) * Z[i, , drop = FALSE]))
  }
  if (se.fit) list(fit = fit, se.fit = se) else fit
}

as.data.frame.hetmtl_fit <- function(x, row.names = NULL, optional = FALSE, level = 0.95, ...) {
  fit_table(x, level)
}

tidy.hetmtl_fit <- function(x, conf.int = TRUE, conf.level = 0.95, ...) {
  tab <- fit_table(x, conf.level)
  cols <- c("site", "term", "estimate", "std.error", "statistic", "p.value", if (conf.int) c("conf.low", "conf.high"))
  tab[, cols]
}

glance.hetmtl_fit <- function(x, ...) {
  tr <- x$treatment
  data.frame(model = x$model, n.sites = length(unique(x$table$site)), nobs = nobs(x),
             treatment = if (is.null(tr)) NA_character_ else tr$name,
             treated = if (is.null(tr)) NA_character_ else tr$treated,
             n.folds = x$settings$n_folds %||% NA_integer_,
             n.rep = if (length(x$settings$n_rep)) x$settings$n_rep[1] else NA_integer_,
             n.dropped = if (is.null(x$na.action)) 0L else length(x$na.action), stringsAsFactors = FALSE)
}

summary.hetmtl_fit <- function(object, level = 0.95, ...) {
  check_level(level)
  structure(list(table = fit_table(object, level), model = object$model, call = object$call, level = level,
                 centre = object$centre, treatment = object$treatment, settings = object$settings,
                 na.action = object$na.action),
            class = "summary.hetmtl_fit")
}

print.summary.hetmtl_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Call:\n"); print(x$call)
  cat(sprintf("\nModel: %s   (%g%% intervals; z statistics, normal approximation)\n", x$model, 100 * x$level))
  cat("Treatment:", treatment_label(x$treatment), "\n")
  if (!is.null(x$settings$learners))
    cat(sprintf("Nuisance learners: outcome %s, treatment %s\n", x$settings$learners[1], x$settings$learners[2]))
  if (length(x$na.action)) cat(sprintf("%d row(s) dropped by na.omit\n", length(x$na.action)))
  cat("\n")
  tab <- x$table
  for (s in unique(tab$site)) {
    t <- tab[tab$site == s, ]
    m <- cbind(Estimate = t$estimate, `Std. Error` = t$std.error, `z value` = t$statistic, `Pr(>|z|)` = t$p.value)
    rownames(m) <- t$term
    cat(sprintf("Site %s (n = %d)%s\n", s, t$n[1], if (!is.null(t$fused) && t$fused[1]) ", fused to the centre" else ""))
    stats::printCoefmat(m, digits = digits, has.Pvalue = TRUE, P.values = TRUE, signif.stars = FALSE,
                        signif.legend = FALSE)
    ci <- cbind(t$conf.low, t$conf.high); dimnames(ci) <- list(t$term, interval_names(x$level))
    print(ci, digits = digits)
    cat("\n")
  }
  if (!is.null(x$centre)) {
    cat("Centre (common component):\n")
    print(x$centre, row.names = FALSE, digits = digits)
  }
  invisible(x)
}

print.hetmtl_fit <- function(x, ...) {
  cat(sprintf("<%s> %s fit, %d site(s), %d rows\n", class(x)[1], x$model, length(unique(x$table$site)), nobs(x)))
  cat("Treatment:", treatment_label(x$treatment), "\n")
  if (length(x$na.action)) cat(sprintf("%d row(s) dropped by na.omit\n", length(x$na.action)))
  print(x$table[, c("site", "term", "estimate", "std.error", "n")], row.names = FALSE)
  invisible(x)
}

# Forest plot: one panel per term, sites top to bottom, labels never clipped.
forest_panels <- function(tab, terms, centre = NULL, main = "", ...) {
  op <- graphics::par(mfrow = c(1L, length(terms)),
                      mar = c(4, 1 + 0.6 * max(nchar(as.character(tab$site)), 4), 3, 1))
  on.exit(graphics::par(op))
  for (tm in terms) {
    t <- tab[tab$term == tm, ]
    k <- nrow(t); yy <- rev(seq_len(k))
    graphics::plot(range(t$conf.low, t$conf.high, na.rm = TRUE), c(0.5, k + 0.5), type = "n", yaxt = "n", ylab = "",
                   xlab = tm, main = main, ...)
    graphics::axis(2, at = yy, labels = t$site, las = 1)
    graphics::segments(t$conf.low, yy, t$conf.high, yy)
    graphics::points(t$estimate, yy, pch = 19)
    if (!is.null(centre)) graphics::abline(v = centre[[tm]], lty = 2)
  }
}

plot.hetmtl_fit <- function(x, level = 0.95, term = NULL, ...) {
  tab <- fit_table(x, level)
  terms <- unique(tab$term)
  if (is.null(term)) term <- terms else if (!all(term %in% terms))
    input_error(sprintf("unknown term(s) %s; the fit has %s", paste(setdiff(term, terms), collapse = ", "),
                        paste(terms, collapse = ", ")))
  forest_panels(tab, term, main = sprintf("%s, %g%% intervals", x$model, 100 * level), ...)
  invisible(x)
}
