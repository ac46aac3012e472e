# One wrapper around every Python call, R conditions for Python's warnings and errors, argument
# checks, and the model-frame machinery shared by every formula interface.

# ---------------------------------------------------------------------------------------- conditions
hetmtl_condition <- function(message, class, call = NULL, ...) {
  structure(class = c(class, "condition"), list(message = message, call = call, ...))
}

# Errors: "input" (the user's data or arguments), "unsupported" (the fit cannot give what was asked),
# "hetmtl" (any other hetmtl error), "python" (an unexpected error inside Python).
hetmtl_abort <- function(message, kind = "input", ...) {
  class <- switch(kind,
                  input = c("hetmtl_input_error", "hetmtl_error", "error"),
                  unsupported = c("hetmtl_unsupported_error", "hetmtl_error", "error"),
                  hetmtl = c("hetmtl_error", "error"),
                  python = c("hetmtl_python_error", "error"))
  stop(hetmtl_condition(message, class, ...))
}

input_error <- function(...) hetmtl_abort(paste0(...), "input")

unsupported <- function(...) hetmtl_abort(paste0(...), "unsupported")

snake_case <- function(x) tolower(gsub("([a-z0-9])([A-Z])", "\\1_\\2", x))

# Re-raise one recorded Python warning as an R warning (classes hetmtl_<category>, hetmtl_warning).
py_warning <- function(w) {
  msg <- w$message
  if (isTRUE(w$count > 1)) msg <- sprintf("%s [raised %d times]", msg, as.integer(w$count))
  warning(hetmtl_condition(msg, c(paste0("hetmtl_", snake_case(w$category)), "hetmtl_warning", "warning"),
                           category = w$category))
}

#' @noRd
hetmtl_call <- function(fun, ...) {
  args <- list(...)
  if (length(args) && (is.null(names(args)) || any(names(args) == "")))
    stop("internal: hetmtl_call takes named arguments only")
  res <- rinterop()$r_call(fun, if (length(args)) args else NULL)
  for (w in res$warnings) py_warning(w)
  err <- res$error
  if (!is.null(err)) {
    msg <- err$message
    if (identical(err$kind, "python")) msg <- sprintf("%s (Python %s)", msg, err$type)
    hetmtl_abort(msg, err$kind, python_type = err$type)
  }
  res$value
}

# ---------------------------------------------------------------------------------------- checks
# A whole number in [low, high] (integer-valued doubles accepted: 5 and 5L; 2.5, NA, "5" refused).
check_count <- function(x, name, low = 1, high = Inf, null_ok = FALSE, length = 1L) {
  if (is.null(x) && null_ok) return(NULL)
  ok <- is.numeric(x) && (is.na(length) || length(x) == length) && length(x) > 0 && all(is.finite(x)) &&
    all(x == round(x)) && all(x >= low) && all(x <= high)
  if (!ok) {
    range <- if (is.finite(high)) sprintf("between %g and %g", low, high) else sprintf("at least %g", low)
    what <- if (identical(length, 1L)) "a whole number" else "whole numbers"
    input_error(sprintf("%s must be %s %s%s, got %s", name, what, range, if (null_ok) " (or NULL)" else "",
                        format_value(x)))
  }
  as.integer(x)
}

# joblib's convention: 1 = serial, -1 = all cores, -2 = all but one; 0 refused.
check_n_jobs <- function(n_jobs) {
  if (!is.numeric(n_jobs) || length(n_jobs) != 1L || !is.finite(n_jobs) || n_jobs != round(n_jobs) || n_jobs == 0)
    input_error(sprintf("n_jobs must be a non-zero whole number (1 = serial, -1 = all cores), got %s", format_value(n_jobs)))
  as.integer(n_jobs)
}

check_seed <- function(seed) check_count(seed, "seed", low = 0, high = .Machine$integer.max, null_ok = TRUE)

check_number <- function(x, name, low = -Inf, high = Inf, low_open = FALSE, null_ok = FALSE) {
  if (is.null(x) && null_ok) return(NULL)
  ok <- is.numeric(x) && length(x) == 1L && is.finite(x) && (if (low_open) x > low else x >= low) && x <= high
  if (!ok) input_error(sprintf("%s must be one finite number %s %g%s, got %s", name, if (low_open) ">" else ">=",
                               low, if (is.finite(high)) sprintf(" and <= %g", high) else "", format_value(x)))
  as.double(x)
}

check_level <- function(level, name = "level") {
  if (!is.numeric(level) || length(level) != 1L || !is.finite(level) || level <= 0 || level >= 1)
    input_error(sprintf("%s must be one number strictly between 0 and 1 (e.g. 0.95), got %s", name, format_value(level)))
  level
}

check_flag <- function(x, name) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) input_error(sprintf("%s must be TRUE or FALSE", name))
  x
}

check_verbose <- function(verbose) check_count(as.numeric(verbose), "verbose", low = 0, high = 3)

format_value <- function(x) {
  if (is.null(x)) return("NULL")
  if (is.character(x)) return(paste(sprintf("\"%s\"", utils::head(x, 3)), collapse = ", "))
  if (is.function(x)) return("a function")
  if (!is.atomic(x)) return(sprintf("a %s", class(x)[1]))
  paste(utils::head(format(x), 3), collapse = ", ")
}

# The arguments in `...` must all be named (they go to the Python estimator, which checks the names).
check_dots <- function(dots, fun) {
  if (length(dots) && (is.null(names(dots)) || any(names(dots) == "")))
    input_error(sprintf("%s: every extra argument in ... must be named (a setting of the Python estimator)", fun))
  dots
}

# Refuse `weights` where the method has no observation weights (rather than ignore them).
no_weights <- function(weights, fun, why) {
  if (!is.null(weights)) input_error(sprintf("%s has no observation weights (%s); remove 'weights'", fun, why))
}

# A nuisance learner: a name of the registry in hetmtl.learners, or a Python learner object.
check_learner <- function(x, name) {
  if (inherits(x, "python.builtin.object")) return(x)
  if (!is.character(x) || length(x) != 1L || is.na(x))
    input_error(sprintf("%s must be a learner name (%s) or a Python learner object", name,
                        paste(sprintf("\"%s\"", learner_names), collapse = ", ")))
  if (!tolower(x) %in% learner_names)
    input_error(sprintf("%s: unknown learner \"%s\"; the names are %s, or pass a Python learner object", name, x,
                        paste(sprintf("\"%s\"", learner_names), collapse = ", ")))
  if (tolower(x) == "default") NULL else tolower(x)
}

learner_names <- c("default", "forest", "lasso", "ridge", "boosting", "logistic")

# ---------------------------------------------------------------------------------------- treatment
# A binary treatment as 0/1 with an explicit treated level; a continuous one unchanged.
code_treatment <- function(x, name, treated = NULL) {
  if (is.logical(x)) {
    if (is.null(treated)) treated <- TRUE
    if (!(isTRUE(treated) || isFALSE(treated)))
      input_error(sprintf("treatment column '%s' is logical: treated must be TRUE or FALSE", name))
    return(list(d = as.double(x == treated), treated = as.character(treated), control = as.character(!treated),
                binary = TRUE))
  }
  if (is.factor(x) || is.character(x)) {
    lv <- if (is.factor(x)) levels(droplevels(x)) else sort(unique(x))
    shown <- paste(sprintf("\"%s\"", lv), collapse = ", ")
    if (length(lv) != 2L)
      input_error(sprintf("treatment column '%s' must have exactly 2 levels, has %d (%s)", name, length(lv), shown))
    if (is.null(treated))
      input_error(sprintf("treatment column '%s' has levels %s: say which is the treated arm, e.g. treated = \"%s\"",
                          name, shown, lv[1]))
    if (!is.character(treated) && !is.factor(treated) || length(treated) != 1L || !as.character(treated) %in% lv)
      input_error(sprintf("treated must be one of the levels of treatment column '%s': %s; got %s", name, shown,
                          format_value(treated)))
    treated <- as.character(treated)
    return(list(d = as.double(as.character(x) == treated), treated = treated, control = setdiff(lv, treated),
                binary = TRUE))
  }
  if (!is.numeric(x)) input_error(sprintf("treatment column '%s' must be numeric, logical, a factor or character", name))
  if (all(x %in% c(0, 1))) {
    if (is.null(treated)) treated <- 1
    if (!is.numeric(treated) || length(treated) != 1L || !treated %in% c(0, 1))
      input_error(sprintf("treatment column '%s' is 0/1: treated must be 1 (the default) or 0", name))
    return(list(d = as.double(x == treated), treated = format(treated), control = format(1 - treated), binary = TRUE))
  }
  if (!is.null(treated))
    input_error(sprintf("treated applies to a binary treatment; column '%s' takes %d distinct values", name,
                        length(unique(x))))
  list(d = as.double(x), treated = NA_character_, control = NA_character_, binary = FALSE)
}

treatment_label <- function(tr) {
  if (is.null(tr)) return("coding not recorded in the input (site summaries or published estimates)")
  if (!isTRUE(tr$binary)) return(sprintf("'%s' (continuous)", tr$name))
  sprintf("'%s' = \"%s\" is treated (vs \"%s\")", tr$name, tr$treated, tr$control)
}

# ---------------------------------------------------------------------------------------- model frames
check_formula <- function(formula, name = "formula", two_sided = TRUE) {
  if (!inherits(formula, "formula") || (two_sided && length(formula) != 3L))
    input_error(sprintf("%s must be a two-sided formula: y ~ x1 + x2 + ...", name))
  formula
}

# Rows kept by `subset` (evaluated in data, as lm() does): integer row numbers of data.
eval_subset <- function(expr, data, env) {
  if (is.null(expr)) return(seq_len(nrow(data)))
  s <- eval(expr, data, env)
  if (is.logical(s)) {
    if (length(s) != nrow(data)) input_error(sprintf("subset is a logical vector of length %d; data has %d rows",
                                                     length(s), nrow(data)))
    return(which(s & !is.na(s)))
  }
  if (is.numeric(s) && all(s == round(s)) && all(abs(s) <= nrow(data))) return(seq_len(nrow(data))[s])
  input_error("subset must be a logical condition on the columns of data or row numbers")
}

check_na_action <- function(na.action) {
  if (is.character(na.action) && length(na.action) == 1L) {
    if (na.action %in% c("na.fail", "na.omit")) return(na.action)
  } else if (is.function(na.action)) {
    if (identical(na.action, stats::na.fail)) return("na.fail")
    if (identical(na.action, stats::na.omit)) return("na.omit")
  }
  input_error("na.action must be na.fail (the default: stop at a missing value) or na.omit (drop those rows, ",
              "reporting how many per site or task)")
}

na_rows_of <- function(v) if (is.matrix(v) || is.data.frame(v)) which(rowSums(is.na(as.matrix(v))) > 0) else which(is.na(v))

# Model frame(s) of one or more formulas on the same rows, with extra per-row columns (treatment,
# site, task), `subset` rows and joint NA handling. `exclude`: columns that must not be covariates
# (left out of `.`, refused when named). Returns the design matrices, the response, the kept rows
# (row numbers of data) and the NA report by `group`.
build_frames <- function(formulas, data, rows, extra, exclude, group_col, na.action, fun) {
  if (!is.data.frame(data)) input_error(sprintf("%s: data must be a data.frame", fun))
  na.action <- check_na_action(na.action)
  dot_data <- data[, setdiff(names(data), exclude), drop = FALSE]
  terms <- lapply(names(formulas), function(nm) {
    f <- formulas[[nm]]
    tt <- tryCatch(stats::terms(f, data = dot_data),
                   error = function(e) input_error(sprintf("%s: %s: %s", fun, nm, conditionMessage(e))))
    rhs_vars <- all.vars(stats::delete.response(tt))
    bad <- intersect(rhs_vars, exclude)
    if (length(bad))
      input_error(sprintf("%s: column '%s' is the %s and cannot be among the %s terms of the formula; remove it",
                          fun, bad[1], names(exclude)[match(bad[1], exclude)], nm))
    env <- environment(f) %||% globalenv()
    found <- vapply(all.vars(tt), function(v) v %in% names(data) || exists(v, envir = env), logical(1))
    missing <- all.vars(tt)[!found]
    if (length(missing)) input_error(sprintf("%s: %s column(s) not in data: %s", fun, nm, paste(missing, collapse = ", ")))
    tt
  })
  names(terms) <- names(formulas)
  sub <- data[rows, , drop = FALSE]
  frames <- lapply(terms, function(tt) stats::model.frame(tt, sub, na.action = stats::na.pass))
  # missing values, column by column: response first, then covariates, then the extra columns
  cols <- list()
  for (nm in names(frames)) {
    mf <- frames[[nm]]
    resp <- attr(terms[[nm]], "response")
    for (j in seq_along(mf)) {
      role <- if (resp > 0 && j == resp) "outcome" else nm
      cols[[length(cols) + 1L]] <- list(role = role, name = names(mf)[j], v = mf[[j]])
    }
  }
  for (nm in names(extra)) cols[[length(cols) + 1L]] <- list(role = nm, name = extra[[nm]], v = sub[[extra[[nm]]]])
  bad <- integer(0)
  for (cl in cols) {
    b <- na_rows_of(cl$v)
    if (length(b) && na.action == "na.fail")
      input_error(sprintf("%s column '%s' has %d missing value(s) (rows %s); remove or impute them, or use na.action = na.omit",
                          cl$role, cl$name, length(b), paste(utils::head(rows[b], 5), collapse = ", ")))
    bad <- union(bad, b)
  }
  dropped <- NULL
  if (length(bad)) {
    bad <- sort(bad)
    g <- if (is.null(group_col)) rep("(all)", length(bad)) else as.character(sub[[group_col]][bad])
    g[is.na(g)] <- "(missing)"
    tab <- table(factor(g, levels = unique(g)))
    dropped <- data.frame(group = names(tab), dropped = as.integer(tab), stringsAsFactors = FALSE)
    if (!is.null(group_col)) names(dropped)[1] <- group_col
    message(sprintf("%s: na.omit dropped %d row(s) with missing values (%s)", fun, length(bad),
                    paste(sprintf("%s: %d", dropped[[1]], dropped$dropped), collapse = ", ")))
    rows <- rows[-bad]
    sub <- data[rows, , drop = FALSE]
    if (!nrow(sub)) input_error(sprintf("%s: no rows left after na.omit", fun))
  }
  out <- list(rows = rows, data = sub, dropped = dropped, terms = terms)
  for (nm in names(terms)) {
    tt <- terms[[nm]]
    mf <- stats::model.frame(tt, sub, na.action = stats::na.fail, drop.unused.levels = TRUE)
    X <- stats::model.matrix(tt, mf)
    X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
    storage.mode(X) <- "double"
    out[[nm]] <- list(X = X, xlevels = stats::.getXlevels(tt, mf), contrasts = attr(X, "contrasts"))
    if (attr(tt, "response") > 0) {
      y <- stats::model.response(mf)
      yname <- deparse1(tt[[2L]])
      if (!is.numeric(y) && !is.logical(y)) input_error(sprintf("%s: outcome '%s' must be numeric", fun, yname))
      if (is.matrix(y)) input_error(sprintf("%s: outcome '%s' must be one column", fun, yname))
      out$y <- as.double(y); out$y_name <- yname
    }
  }
  out
}

`%||%` <- function(a, b) if (is.null(a)) b else a

na_omit_attr <- function(all_rows, kept, data) {
  gone <- setdiff(all_rows, kept)
  if (!length(gone)) return(NULL)
  structure(gone, names = rownames(data)[gone], class = "omit")
}

# The nuisance learner names of site_dml() and what each builds (from hetmtl.learners).
hetmtl_learners <- function() {
  d <- hetmtl_call("describe_learners")
  data.frame(name = names(d), regressor = vapply(d, function(x) x$regressor, ""),
             classifier = vapply(d, function(x) x$classifier, ""), row.names = NULL, stringsAsFactors = FALSE)
}
