# Multi-task models (dual encoder, MTL-HMB): fitted in Python, returned as plain R objects holding
# the model as validated JSON; predict() reloads that JSON in Python (no live handle needed).

py_seed <- function(seed) if (is.null(seed)) NULL else as.integer(seed)

check_columns <- function(data, cols, what) {
  missing <- setdiff(cols, names(data))
  if (length(missing)) input_error(sprintf("%s column(s) not in data: %s", what, paste(missing, collapse = ", ")))
  invisible(TRUE)
}

task_labels <- function(data, task) {
  if (!is.character(task) || length(task) != 1) input_error("task must be the name of the task column")
  check_columns(data, task, "task")
  lab <- data[[task]]
  if (anyNA(lab)) {
    bad <- which(is.na(lab))
    input_error(sprintf("task column '%s' has %d missing value(s) (rows %s)", task, length(bad),
                 paste(utils::head(bad, 5), collapse = ", ")))
  }
  as.character(lab)
}

check_known_tasks <- function(labels, tasks, task) {
  unknown <- setdiff(unique(labels), tasks)
  if (length(unknown)) {
    input_error(sprintf("task column '%s' has task(s) not in the fitted model: %s (fitted tasks: %s)", task,
                 paste(unknown, collapse = ", "), paste(tasks, collapse = ", ")))
  }
  invisible(TRUE)
}

check_split <- function(split) {
  if (!is.numeric(split) || !length(split) %in% 2:3 || any(split <= 0) || abs(sum(split) - 1) > 1e-8) {
    input_error("split must be 2 or 3 positive fractions (train, validation[, test]) summing to 1")
  }
  as.list(as.double(split))
}

plain_frame <- function(res) {  # a pandas frame sent as {columns, data}
  cols <- unlist(res$columns)
  df <- as.data.frame(lapply(res$data[cols], function(v) unlist(lapply(v, function(x) if (is.null(x)) NA else x))),
                      check.names = FALSE, stringsAsFactors = FALSE)
  names(df) <- cols
  df
}

rmse_frame <- function(res) {
  df <- as.data.frame(lapply(res, unlist), check.names = FALSE, stringsAsFactors = FALSE)
  df
}

# ---------------------------------------------------------------------------------------- dual encoder
dual_encoder <- function(formula = NULL, data, task, x = NULL, y = NULL, n_shared = 4L, n_specific = 4L,
                         hidden = 32L, lambda = 0.01, lam_orth = 0.01, penalty = c("group_l2", "l1"),
                         split = c(0.6, 0.2, 0.2), max_epochs = 500L, patience = 30L, lr = 0.01,
                         standardize = TRUE, subset = NULL, weights = NULL, na.action = stats::na.fail,
                         seed = NULL, n_threads = 1L, verbose = 0L, ...) {
  penalty <- match.arg(penalty)
  no_weights(weights, "dual_encoder()", "its losses are per-task means; per-task weights go in task_weights = ...")
  dots <- check_dots(list(...), "dual_encoder()")
  n_shared <- check_count(n_shared, "n_shared", low = 0)
  n_specific <- check_count(n_specific, "n_specific", low = 0)
  hidden <- if (length(hidden)) check_count(hidden, "hidden", low = 1, length = NA) else integer(0)
  max_epochs <- check_count(max_epochs, "max_epochs")
  patience <- check_count(patience, "patience")
  n_threads <- check_count(n_threads, "n_threads")
  lam_orth <- check_number(lam_orth, "lam_orth", low = 0)
  lr <- check_number(lr, "lr", low = 0, low_open = TRUE)
  check_flag(standardize, "standardize")
  seed <- check_seed(seed)
  verbose <- check_verbose(verbose)
  if (!is.numeric(lambda) || !length(lambda) || any(!is.finite(lambda)) || any(lambda < 0))
    input_error("lambda must be one or more finite values >= 0")
  fr <- dual_frames(formula, data, task, x, y, substitute(subset), parent.frame(), na.action, "dual_encoder()")
  X <- fr$feature$X
  args <- c(list("dual_encoder_fit",
    x = as_py_list(X), nrow = nrow(X), x_cols = as.list(colnames(X)), y = as_py_list(fr$y), task = as.list(fr$labels),
    split = check_split(split), lambdas = as.list(as.double(lambda)), n_shared = n_shared,
    n_specific = n_specific, hidden = as.list(hidden), lam_orth = lam_orth, penalty = penalty,
    max_epochs = max_epochs, patience = patience, lr = lr, standardize = standardize,
    random_state = seed, n_threads = n_threads), if (verbose > 0L) list(verbose = verbose), dots)
  res <- do.call(hetmtl_call, args)
  new_dual_fit(res, fr, data, task, hidden, match.call())
}

dual_encoder_cv <- function(formula = NULL, data, task, x = NULL, y = NULL, param_grid = NULL, cv = 3L,
                            test_fraction = 0.2, subset = NULL, na.action = stats::na.fail, seed = NULL,
                            n_jobs = 1L, n_threads = 1L, verbose = 0L, ...) {
  dots <- check_dots(list(...), "dual_encoder_cv()")
  if (!is.null(param_grid) && (!is.list(param_grid) || is.null(names(param_grid)) || any(names(param_grid) == "")))
    input_error("param_grid must be a named list: setting -> candidate values, e.g. list(lam = c(0.01, 0.1), n_specific = c(0, 2))")
  if (!is.numeric(cv) || length(cv) != 1L || !is.finite(cv) || !(cv > 0 && cv < 1 || cv >= 2 && cv == round(cv)))
    input_error(sprintf("cv must be a whole number of folds >= 2 or a validation fraction in (0, 1), got %s", format_value(cv)))
  test_fraction <- check_number(test_fraction, "test_fraction", low = 0, high = 0.9)
  seed <- check_seed(seed)
  n_jobs <- check_n_jobs(n_jobs)
  n_threads <- check_count(n_threads, "n_threads")
  verbose <- check_verbose(verbose)
  fr <- dual_frames(formula, data, task, x, y, substitute(subset), parent.frame(), na.action, "dual_encoder_cv()")
  X <- fr$feature$X
  grid <- if (is.null(param_grid)) NULL else lapply(param_grid, function(v) if (is.list(v)) v else as.list(v))
  res <- do.call(hetmtl_call, c(list("dual_encoder_cv_fit",
    x = as_py_list(X), nrow = nrow(X), x_cols = as.list(colnames(X)), y = as_py_list(fr$y), task = as.list(fr$labels),
    test_fraction = test_fraction, param_grid = grid, cv = cv, random_state = seed, n_jobs = n_jobs,
    verbose = verbose, n_threads = n_threads), dots))
  fit <- new_dual_fit(res, fr, data, task, unlist(res$hidden), match.call())
  fit$family <- "dual encoder (tuned by cross-validation)"
  fit$selected <- res$best_params
  fit
}

# Model frame of a dual-encoder fit: a formula, or the x / y column names.
dual_frames <- function(formula, data, task, x, y, subset_expr, env, na.action, fun) {
  if (!is.data.frame(data)) input_error("data must be a data.frame")
  if (!is.character(task) || length(task) != 1) input_error("task must be the name of the task column")
  check_columns(data, task, "task")
  if (is.null(formula)) {
    if (is.null(x) || is.null(y)) input_error("give a formula, or the column names x (features) and y (outcome)")
    check_columns(data, c(y, x), "feature/outcome")
    for (col in x) {
      v <- data[[col]]
      if (is.factor(v) || is.character(v))
        input_error(sprintf("feature column '%s' is a %s; use the formula interface (factors become dummy columns) or convert it",
                            col, if (is.factor(v)) "factor" else "character vector"))
    }
    formula <- stats::reformulate(sprintf("`%s`", x), response = as.name(y), env = env)
  } else {
    check_formula(formula)
  }
  rows <- eval_subset(subset_expr, data, env)
  fr <- build_frames(list(feature = formula), data, rows, extra = list(task = task), exclude = c(task = task),
                     group_col = task, na.action = na.action, fun = fun)
  fr$labels <- as.character(fr$data[[task]])
  fr$all_rows <- rows
  fr
}

new_dual_fit <- function(res, fr, data, task, hidden, call) {
  X <- fr$feature$X
  tasks <- unlist(res$tasks)
  mat <- function(v, ncol) if (ncol == 0) matrix(0, length(tasks), 0) else matrix(unlist(v), ncol = ncol, byrow = TRUE)
  q <- length(unlist(res$alpha_center)); p <- length(unlist(res$beta_center))
  heads <- list(b = unlist(res$b), alpha = mat(res$alpha, q), beta = mat(res$beta, p),
                alpha_center = unlist(res$alpha_center), beta_center = unlist(res$beta_center))
  lin <- NULL
  if (!is.null(res$linear_coef)) {
    lin <- matrix(unlist(res$linear_coef), nrow = length(tasks), byrow = TRUE,
                  dimnames = list(tasks, c("(Intercept)", colnames(X))))
  }
  structure(list(model_json = res$model_json, family = "dual encoder", tasks = tasks, task = task, x_cols = colnames(X),
                 terms = fr$terms$feature, xlevels = fr$feature$xlevels, y_name = fr$y_name, rmse = rmse_frame(res$rmse),
                 heads = heads, linear_coef = lin, hidden = hidden, selection = plain_frame(res$selection),
                 lambda = res$lambda,
                 selected = list(lambda = res$lambda, n_epochs = res$n_epochs, best_epoch = unlist(res$best_epoch)),
                 fitted = stats::setNames(unlist(res$fitted), rownames(fr$data)), y = fr$y, task_of_row = fr$labels,
                 na.action = na_omit_attr(fr$all_rows, fr$rows, data), na_dropped = fr$dropped,
                 params = res$params, call = call),
            class = c("hetmtl_dual_encoder", "hetmtl_mtl"))
}

column_matrix <- function(data, cols) {
  for (col in cols) {
    v <- data[[col]]
    if (is.factor(v) || is.character(v)) {
      input_error(sprintf("feature column '%s' is a %s; use the formula interface (factors become dummy columns) or convert it",
                   col, if (is.factor(v)) "factor" else "character vector"))
    }
  }
  check_no_na(data[cols], "feature")
  X <- as.matrix(data[cols]); storage.mode(X) <- "double"
  X
}

new_design <- function(object, newdata) {
  if (is.null(object$terms)) {
    check_columns(newdata, object$x_cols, "feature")
    return(column_matrix(newdata, object$x_cols))
  }
  tt <- stats::delete.response(object$terms)
  vars <- all.vars(tt)
  check_columns(newdata, vars, "feature")
  check_no_na(newdata[vars], "feature")
  mf <- tryCatch(stats::model.frame(tt, newdata, xlev = object$xlevels, na.action = stats::na.fail),
                 error = function(e) input_error(sprintf("newdata: %s", conditionMessage(e))))
  X <- stats::model.matrix(tt, mf)
  X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
  storage.mode(X) <- "double"
  X
}

# The latent heads (b, alpha, beta per task; last row the centres) on the standardised scale.
latent_heads <- function(object) {
  if (!inherits(object, "hetmtl_dual_encoder")) input_error("latent_heads() needs a dual_encoder() fit")
  h <- object$heads
  q <- ncol(h$alpha); p <- ncol(h$beta)
  m <- rbind(cbind(h$b, h$alpha, h$beta), c(NA_real_, h$alpha_center, h$beta_center))
  dimnames(m) <- list(c(object$tasks, "(centre)"),
                      c("(Intercept)", if (q) paste0("alpha", seq_len(q)), if (p) paste0("beta", seq_len(p))))
  m
}

coef.hetmtl_dual_encoder <- function(object, ...) {
  if (!is.null(object$linear_coef)) return(object$linear_coef)
  unsupported(sprintf(paste0(
    "this dual encoder has hidden layers (hidden = %s): its predictions are not linear in the covariates, so it has ",
    "no coefficients on them; latent_heads() gives the latent heads, and dual_encoder(..., hidden = integer(0)) ",
    "(linear encoders) gives coefficients on %s"), paste(object$hidden, collapse = ", "),
    paste(utils::head(object$x_cols, 3), collapse = ", ")))
}

# ---------------------------------------------------------------------------------------- MTL-HMB
mtl_hmb <- function(data, y, task, blocks, anchor = names(blocks)[1], split = c(0.6, 0.2, 0.2), grid = "small",
                    hbi_grid = "small", max_epochs = 25000L, hbi_max_epochs = 5000L, patience = 30L, lr = 1e-3,
                    batch_size = 16L, seed = NULL, n_threads = 1L, verbose = 0L, subset = NULL, ...) {
  dots <- check_dots(list(...), "mtl_hmb()")
  if (!is.data.frame(data)) input_error("data must be a data.frame")
  data <- data[eval_subset(substitute(subset), data, parent.frame()), , drop = FALSE]
  inp <- blockwise_inputs(data, y, task, blocks, anchor)
  args <- c(list("mtl_hmb_fit",
    columns = inp$columns, task = inp$task, y = inp$y, block_map = inp$blocks, anchor = anchor, split = check_split(split),
    grid = py_grid(grid), hbi_grid = py_grid(hbi_grid), max_epochs = check_count(max_epochs, "max_epochs"),
    hbi_max_epochs = check_count(hbi_max_epochs, "hbi_max_epochs"), patience = check_count(patience, "patience"),
    lr = check_number(lr, "lr", low = 0, low_open = TRUE), batch_size = check_count(batch_size, "batch_size"),
    random_state = check_seed(seed), n_threads = check_count(n_threads, "n_threads")),
    if (check_verbose(verbose) > 0L) list(verbose = as.integer(verbose)), dots)
  res <- do.call(hetmtl_call, args)
  structure(list(model_json = res$model_json, family = "MTL-HMB", tasks = unlist(res$tasks), task = task,
                 blocks = lapply(res$block_map, unlist), private = unlist(res$private), y_name = y,
                 rmse = rmse_frame(res$rmse), selected = lapply(res$selected, identity),
                 selection = plain_frame(res$selection), hbi_selection = plain_frame(res$hbi_selection),
                 fitted = stats::setNames(unlist(res$fitted), rownames(data)), y = unlist(inp$y),
                 task_of_row = unlist(inp$task), split = unlist(res$split),
                 params = res$params, call = match.call()),
            class = c("hetmtl_mtl_hmb", "hetmtl_mtl"))
}

blockwise_baseline <- function(data, y, task, blocks, method = c("stl", "htl", "hps", "mbi", "cc_lasso"),
                               anchor = names(blocks)[1], split = c(0.6, 0.2, 0.2), grid = "small", hbi_grid = "small",
                               max_epochs = 25000L, hbi_max_epochs = 5000L, patience = 30L, lr = 1e-3, batch_size = 16L,
                               seed = NULL, n_threads = 1L, verbose = 0L, subset = NULL, ...) {
  method <- match.arg(method)
  verbose <- check_verbose(verbose)
  dots <- check_dots(list(...), "blockwise_baseline()")
  if (!is.data.frame(data)) input_error("data must be a data.frame")
  data <- data[eval_subset(substitute(subset), data, parent.frame()), , drop = FALSE]
  inp <- blockwise_inputs(data, y, task, blocks, anchor)
  common <- list("blockwise_baseline_fit", method = method, columns = inp$columns, task = inp$task, y = inp$y,
                 block_map = inp$blocks, anchor = anchor, split = check_split(split), random_state = check_seed(seed),
                 n_threads = check_count(n_threads, "n_threads"))
  if (verbose > 0L) common$verbose <- verbose
  if (method %in% c("mbi", "cc_lasso")) {  # no network settings: the split, the seed, threads and the method's own (...)
    nets <- c("grid", "hbi_grid", "max_epochs", "hbi_max_epochs", "patience", "lr", "batch_size")
    given <- intersect(names(match.call())[-1], nets)
    if (length(given)) input_error(sprintf("method \"%s\" has no network settings; remove %s", method, paste(given, collapse = ", ")))
    res <- do.call(hetmtl_call, c(common, dots))
  } else {
    res <- do.call(hetmtl_call, c(common, list(
      grid = py_grid(grid), hbi_grid = py_grid(hbi_grid), max_epochs = check_count(max_epochs, "max_epochs"),
      hbi_max_epochs = check_count(hbi_max_epochs, "hbi_max_epochs"), patience = check_count(patience, "patience"),
      lr = check_number(lr, "lr", low = 0, low_open = TRUE), batch_size = check_count(batch_size, "batch_size")), dots))
  }
  rmse <- rmse_frame(res$rmse)
  structure(list(family = sprintf("block-wise baseline %s", toupper(method)), method = method, tasks = rmse$task,
                 task = task, y_name = y, rmse = rmse,
                 fitted = stats::setNames(unlist(res$fitted), rownames(data)), y = unlist(inp$y),
                 task_of_row = unlist(inp$task), split = unlist(res$split), call = match.call()),
            class = c("hetmtl_blockwise", "hetmtl_mtl"))
}

# Validated block-wise inputs as plain lists for Python.
blockwise_inputs <- function(data, y, task, blocks, anchor) {
  if (!is.data.frame(data)) input_error("data must be a data.frame")
  blocks <- check_blocks(blocks, anchor)
  labels <- task_labels(data, task)
  check_columns(data, y, "outcome")
  yy <- as_double_vector(data[[y]], y)
  cols <- unlist(blocks, use.names = FALSE)
  check_columns(data, cols, "block")
  check_block_pattern(data, labels, blocks, check_numeric = TRUE)
  list(columns = lapply(data[cols], as_py_list), task = as.list(labels), y = as_py_list(yy),
       blocks = lapply(blocks, as.list))
}

py_grid <- function(grid) {
  if (is.character(grid) && length(grid) == 1) return(grid)
  if (!is.data.frame(grid)) input_error("grid must be \"small\", \"code\", \"paper\" or a data.frame of configurations")
  lapply(seq_len(nrow(grid)), function(i) as.list(grid[i, , drop = FALSE]))
}

check_blocks <- function(blocks, anchor) {
  if (!is.list(blocks) || is.null(names(blocks)) || any(names(blocks) == "")) {
    input_error("blocks must be a named list: block name -> its column names (the anchor and one block per task)")
  }
  if (!anchor %in% names(blocks)) input_error(sprintf("anchor '%s' is not a block of 'blocks'", anchor))
  lapply(blocks, as.character)
}

# Each block must be fully observed or entirely NA within a task; block columns must be numeric.
check_block_pattern <- function(data, labels, blocks, check_numeric) {
  for (b in names(blocks)) for (col in blocks[[b]]) {
    v <- data[[col]]
    if (check_numeric && !is.numeric(v) && !is.logical(v)) {
      input_error(sprintf("block '%s', column '%s' is a %s; MTL-HMB needs numeric columns (make dummies with model.matrix())",
                   b, col, if (is.factor(v)) "factor" else class(v)[1]))
    }
  }
  for (t in unique(labels)) {
    rows <- which(labels == t)
    for (b in names(blocks)) {
      na <- is.na(as.matrix(data[rows, blocks[[b]], drop = FALSE]))
      if (any(na) && !all(na)) {
        j <- which(colSums(na) > 0)[1]; col <- blocks[[b]][j]; bad <- rows[na[, j]]
        input_error(sprintf("task '%s', block '%s': column '%s' has %d missing value(s) (rows %s) but the block is observed in this task; a block must be fully observed or fully NA within a task",
                     t, b, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")))
      }
    }
  }
  invisible(TRUE)
}

# ---------------------------------------------------------------------------------------- methods
predict.hetmtl_mtl <- function(object, newdata, ...) {
  if (inherits(object, "hetmtl_blockwise"))
    unsupported("blockwise_baseline() fits keep their RMSE, fitted values and residuals but not the model; ",
                "predict new rows with the Python class (hetmtl.blockwise.", toupper(object$method), ")")
  if (missing(newdata)) return(fitted(object))
  if (!is.data.frame(newdata)) input_error("newdata must be a data.frame with the task column")
  labels <- task_labels(newdata, object$task)
  check_known_tasks(labels, object$tasks, object$task)
  if (inherits(object, "hetmtl_dual_encoder")) {
    X <- new_design(object, newdata)
    if (!identical(colnames(X), object$x_cols)) {
      input_error(sprintf("newdata gives feature columns %s; the model has %s", paste(colnames(X), collapse = ", "),
                   paste(object$x_cols, collapse = ", ")))
    }
    out <- hetmtl_call("dual_encoder_predict", model_json = object$model_json, x = as_py_list(X), nrow = nrow(X),
                       ncol = ncol(X), task = as.list(labels))
  } else {
    anchor <- names(object$blocks)[1]
    need <- unique(unlist(lapply(unique(labels), function(t) c(object$blocks[[anchor]], object$blocks[[object$private[[t]]]]))))
    check_columns(newdata, need, "block")
    for (t in unique(labels)) {
      own <- c(anchor, object$private[[t]])
      rows <- which(labels == t)
      for (b in own) for (col in object$blocks[[b]]) {
        v <- newdata[[col]][rows]
        if (is.factor(v) || is.character(v)) input_error(sprintf("block '%s', column '%s' must be numeric", b, col))
        if (anyNA(v)) {
          bad <- rows[is.na(v)]
          input_error(sprintf("task '%s', block '%s': column '%s' has %d missing value(s) (rows %s); prediction needs the task's anchor and own block",
                       t, b, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")))
        }
      }
    }
    out <- hetmtl_call("mtl_hmb_predict", model_json = object$model_json, columns = lapply(newdata[need], as_py_list),
                       task = as.list(labels))
  }
  unlist(out)
}

print.hetmtl_mtl <- function(x, ...) {
  cat(sprintf("<%s> %s, %d tasks\n", class(x)[1], x$family, length(x$tasks)))
  if (length(x$selected)) cat("Selected:", selected_string(x), "\n")
  if (length(x$na.action)) cat(sprintf("%d row(s) dropped by na.omit\n", length(x$na.action)))
  cat("\n")
  print(x$rmse, row.names = FALSE, digits = 4)
  invisible(x)
}

coef.hetmtl_mtl <- function(object, ...) {
  unsupported(sprintf("%s is a neural-network model: it has no coefficients on the covariates; use predict(), ",
                      object$family), "fitted() or, for a linear multi-task model, dual_encoder(..., hidden = integer(0))")
}

vcov.hetmtl_mtl <- function(object, ...) {
  unsupported(sprintf("%s gives no standard errors or covariance matrix (no inference theory for its estimates); ",
                      object$family), "for effects with standard errors use site_dml() and late_fusion()")
}

confint.hetmtl_mtl <- function(object, parm, level = 0.95, ...) {
  check_level(level)
  unsupported(sprintf("%s gives no confidence intervals (no inference theory for its estimates); ", object$family),
              "for effects with intervals use site_dml() and late_fusion()")
}

fitted.hetmtl_mtl <- function(object, ...) object$fitted

residuals.hetmtl_mtl <- function(object, ...) stats::setNames(object$y - object$fitted, names(object$fitted))

nobs.hetmtl_mtl <- function(object, ...) length(object$fitted)

glance.hetmtl_mtl <- function(x, ...) {
  r <- x$rmse
  out <- data.frame(model = x$family, n.tasks = length(x$tasks), nobs = nobs(x), stringsAsFactors = FALSE)
  for (p in c("train", "validation", "test")) {
    col <- paste0("rmse_", p)
    if (col %in% names(r)) out[[paste0("rmse.", p)]] <- sqrt(sum(r[[paste0("n_", p)]] * r[[col]]^2) / sum(r[[paste0("n_", p)]]))
  }
  if (length(x$selected)) out$selected <- selected_string(x)
  out
}

selected_string <- function(x) {
  s <- x$selected
  s <- s[!vapply(s, is.null, logical(1))]
  paste(sprintf("%s = %s", names(s), vapply(s, function(v) paste(format(v, digits = 4), collapse = ","), "")), collapse = ", ")
}

summary.hetmtl_mtl <- function(object, ...) {
  structure(list(call = object$call, family = object$family, rmse = object$rmse, selected = object$selected,
                 selection = object$selection, tasks = object$tasks,
                 label = if (length(object$selected)) selected_string(object) else "(none)"),
            class = "summary.hetmtl_mtl")
}

print.summary.hetmtl_mtl <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Call:\n"); print(x$call)
  cat(sprintf("\nModel: %s, %d tasks\n", x$family, length(x$tasks)))
  cat("Selected hyperparameters:", x$label, "\n\nPer-task RMSE (train / validation / test rows of the split):\n")
  print(x$rmse, row.names = FALSE, digits = digits)
  cat("\nValidation loss of every configuration:\n")
  print(x$selection, row.names = FALSE, digits = digits)
  invisible(x)
}

as.data.frame.hetmtl_mtl <- function(x, row.names = NULL, optional = FALSE, ...) x$rmse

tidy.hetmtl_mtl <- function(x, ...) {
  r <- x$rmse
  parts <- intersect(c("train", "validation", "test"), sub("^rmse_", "", grep("^rmse_", names(r), value = TRUE)))
  out <- do.call(rbind, lapply(parts, function(p) data.frame(task = r$task, part = p, n = r[[paste0("n_", p)]],
                                                               rmse = r[[paste0("rmse_", p)]], stringsAsFactors = FALSE)))
  rownames(out) <- NULL
  out
}

plot.hetmtl_mtl <- function(x, ...) {
  td <- tidy.hetmtl_mtl(x)
  parts <- unique(td$part)
  m <- sapply(parts, function(p) td$rmse[td$part == p])
  m <- matrix(m, nrow = length(x$tasks), dimnames = list(x$tasks, parts))
  graphics::barplot(t(m), beside = TRUE, legend.text = parts, ylab = "RMSE",
                    main = sprintf("%s: RMSE by task", x$family), ...)
  invisible(x)
}

# ---------------------------------------------------------------------------------------- simulators
simulate_encoders <- function(design = c("latent", "paper_like"), n_tasks = 5L, n = 100L, d = 10L, ...,
                              n_test = 0L, seed = NULL, test_seed = NULL) {
  design <- match.arg(design)
  check_dots(list(...), "simulate_encoders()")
  res <- hetmtl_call("simulate_encoders", design = design, n_test = check_count(n_test, "n_test", low = 0),
                     test_seed = check_seed(test_seed), n_tasks = check_count(n_tasks, "n_tasks"),
                     n = as.list(check_count(n, "n", length = NA)), d = check_count(d, "d"),
                     random_state = check_seed(seed), ...)
  out <- list(data = columns_to_frame(res$data), info = res$info)
  if (!is.null(res$test)) out$test <- columns_to_frame(res$test)
  if (!is.null(res$beta)) {
    out$beta <- matrix(unlist(res$beta), nrow = as.integer(n_tasks), byrow = TRUE)
    out$beta_center <- unlist(res$beta_center); out$drifted <- unlist(res$drifted)
  }
  out
}

simulate_blockwise <- function(setting = NULL, value = NULL, n = NULL, p0 = NULL, p_private = NULL, rho = NULL,
                               alpha = NULL, sigma = NULL, n_tasks = NULL, linear = NULL, gaussian = NULL, seed = NULL) {
  if (!is.null(setting) && is.null(value)) input_error("a setting needs its value (e.g. setting = \"D\", value = 200)")
  int_list <- function(v) if (is.null(v)) NULL else as.list(as.integer(v))
  dbl_list <- function(v) if (is.null(v)) NULL else as.list(as.double(v))
  res <- hetmtl_call("simulate_blockwise", setting = setting, value = value, n = int_list(n),
                                       p0 = if (is.null(p0)) NULL else as.integer(p0), p_private = int_list(p_private),
                                       rho = dbl_list(rho), alpha = alpha, sigma = dbl_list(sigma),
                                       n_tasks = if (is.null(n_tasks)) NULL else as.integer(n_tasks),
                                       linear = linear, gaussian = gaussian, seed = check_seed(seed))
  list(data = columns_to_frame(res$data), blocks = lapply(res$block_map, unlist), mean = unlist(res$mean),
       params = lapply(res$params, unlist))
}
