# Multi-task models (dual encoder, MTL-HMB): fitted in Python, returned as plain R objects holding
# the model as validated JSON; predict() reloads that JSON in Python (no live handle needed).

py_seed <- function(seed) if (is.null(seed)) NULL else as.integer(seed)

check_columns <- function(data, cols, what) {
  missing <- setdiff(cols, names(data))
  if (length(missing)) stop(sprintf("%s column(s) not in data: %s", what, paste(missing, collapse = ", ")), call. = FALSE)
  invisible(TRUE)
}

task_labels <- function(data, task) {
  if (!is.character(task) || length(task) != 1) stop("task must be the name of the task column", call. = FALSE)
  check_columns(data, task, "task")
  lab <- data[[task]]
  if (anyNA(lab)) {
    bad <- which(is.na(lab))
    stop(sprintf("task column '%s' has %d missing value(s) (rows %s)", task, length(bad),
                 paste(utils::head(bad, 5), collapse = ", ")), call. = FALSE)
  }
  as.character(lab)
}

check_known_tasks <- function(labels, tasks, task) {
  unknown <- setdiff(unique(labels), tasks)
  if (length(unknown)) {
    stop(sprintf("task column '%s' has task(s) not in the fitted model: %s (fitted tasks: %s)", task,
                 paste(unknown, collapse = ", "), paste(tasks, collapse = ", ")), call. = FALSE)
  }
  invisible(TRUE)
}

check_split <- function(split) {
  if (!is.numeric(split) || !length(split) %in% 2:3 || any(split <= 0) || abs(sum(split) - 1) > 1e-8) {
    stop("split must be 2 or 3 positive fractions (train, validation[, test]) summing to 1", call. = FALSE)
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
                         standardize = TRUE, seed = NULL, n_threads = 1L, ...) {
  penalty <- match.arg(penalty)
  if (!is.data.frame(data)) stop("data must be a data.frame", call. = FALSE)
  labels <- task_labels(data, task)
  spec <- dual_design(formula, data, x, y)
  if (!is.numeric(lambda) || !length(lambda) || any(lambda < 0)) stop("lambda must be one or more values >= 0", call. = FALSE)
  X <- spec$X
  res <- rinterop()$dual_encoder_fit(
    x = as_py_list(X), nrow = nrow(X), x_cols = as.list(colnames(X)), y = as_py_list(spec$y), task = as.list(labels),
    split = check_split(split), lambdas = as.list(as.double(lambda)), n_shared = as.integer(n_shared),
    n_specific = as.integer(n_specific), hidden = as.list(as.integer(hidden)), lam_orth = lam_orth, penalty = penalty,
    max_epochs = as.integer(max_epochs), patience = as.integer(patience), lr = lr, standardize = standardize,
    random_state = py_seed(seed), n_threads = as.integer(n_threads), ...)
  tasks <- unlist(res$tasks)
  mat <- function(v, ncol) if (ncol == 0) matrix(0, length(tasks), 0) else matrix(unlist(v), ncol = ncol, byrow = TRUE)
  q <- length(unlist(res$alpha_center)); p <- length(unlist(res$beta_center))
  heads <- list(b = unlist(res$b), alpha = mat(res$alpha, q), beta = mat(res$beta, p),
                alpha_center = unlist(res$alpha_center), beta_center = unlist(res$beta_center))
  structure(list(model_json = res$model_json, family = "dual encoder", tasks = tasks, task = task, x_cols = colnames(X),
                 terms = spec$terms, xlevels = spec$xlevels, y_name = spec$y_name, rmse = rmse_frame(res$rmse),
                 heads = heads, selection = plain_frame(res$selection), lambda = res$lambda,
                 selected = list(lambda = res$lambda, n_epochs = res$n_epochs, best_epoch = unlist(res$best_epoch)),
                 params = res$params, call = match.call()),
            class = c("hetmtl_dual_encoder", "hetmtl_mtl"))
}

# Outcome and numeric design from a formula (factors -> treatment dummies) or from column names.
dual_design <- function(formula, data, x, y) {
  if (!is.null(formula)) {
    if (!inherits(formula, "formula") || length(formula) != 3) stop("formula must be two-sided: y ~ x1 + x2 + ...", call. = FALSE)
    y_name <- all.vars(formula[[2]])
    check_columns(data, y_name, "outcome")
    rhs <- formula[-2]
    vars <- all.vars(rhs)
    check_columns(data, vars, "feature")
    check_no_na(data[vars], "feature")
    tt <- stats::terms(rhs, data = data)
    mf <- stats::model.frame(tt, data, na.action = stats::na.fail)
    X <- stats::model.matrix(tt, mf)
    X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
    storage.mode(X) <- "double"
    return(list(X = X, y = as_double_vector(data[[y_name]], y_name), y_name = y_name, terms = tt,
                xlevels = stats::.getXlevels(tt, mf)))
  }
  if (is.null(x) || is.null(y)) stop("give a formula, or the column names x (features) and y (outcome)", call. = FALSE)
  check_columns(data, c(y, x), "feature/outcome")
  X <- column_matrix(data, x)
  list(X = X, y = as_double_vector(data[[y]], y), y_name = y, terms = NULL, xlevels = NULL)
}

column_matrix <- function(data, cols) {
  for (col in cols) {
    v <- data[[col]]
    if (is.factor(v) || is.character(v)) {
      stop(sprintf("feature column '%s' is a %s; use the formula interface (factors become dummy columns) or convert it",
                   col, if (is.factor(v)) "factor" else "character vector"), call. = FALSE)
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
                 error = function(e) stop(sprintf("newdata: %s", conditionMessage(e)), call. = FALSE))
  X <- stats::model.matrix(tt, mf)
  X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
  storage.mode(X) <- "double"
  X
}

coef.hetmtl_dual_encoder <- function(object, ...) {
  h <- object$heads
  q <- ncol(h$alpha); p <- ncol(h$beta)
  m <- rbind(cbind(h$b, h$alpha, h$beta), c(NA_real_, h$alpha_center, h$beta_center))
  dimnames(m) <- list(c(object$tasks, "(centre)"),
                      c("(Intercept)", if (q) paste0("alpha", seq_len(q)), if (p) paste0("beta", seq_len(p))))
  m
}

# ---------------------------------------------------------------------------------------- MTL-HMB
mtl_hmb <- function(data, y, task, blocks, anchor = names(blocks)[1], split = c(0.6, 0.2, 0.2), grid = "small",
                    hbi_grid = "small", max_epochs = 25000L, hbi_max_epochs = 5000L, patience = 30L, lr = 1e-3,
                    batch_size = 16L, seed = NULL, n_threads = 1L, ...) {
  inp <- blockwise_inputs(data, y, task, blocks, anchor)
  res <- rinterop()$mtl_hmb_fit(
    columns = inp$columns, task = inp$task, y = inp$y, block_map = inp$blocks, anchor = anchor, split = check_split(split),
    grid = py_grid(grid), hbi_grid = py_grid(hbi_grid), max_epochs = as.integer(max_epochs),
    hbi_max_epochs = as.integer(hbi_max_epochs), patience = as.integer(patience), lr = lr,
    batch_size = as.integer(batch_size), random_state = py_seed(seed), n_threads = as.integer(n_threads), ...)
  structure(list(model_json = res$model_json, family = "MTL-HMB", tasks = unlist(res$tasks), task = task,
                 blocks = lapply(res$block_map, unlist), private = unlist(res$private), y_name = y,
                 rmse = rmse_frame(res$rmse), selected = lapply(res$selected, identity),
                 selection = plain_frame(res$selection), hbi_selection = plain_frame(res$hbi_selection),
                 params = res$params, call = match.call()),
            class = c("hetmtl_mtl_hmb", "hetmtl_mtl"))
}

blockwise_baseline <- function(data, y, task, blocks, method = c("stl", "htl", "hps", "mbi"), anchor = names(blocks)[1],
                               split = c(0.6, 0.2, 0.2), grid = "small", hbi_grid = "small", max_epochs = 25000L,
                               hbi_max_epochs = 5000L, patience = 30L, lr = 1e-3, batch_size = 16L, seed = NULL,
                               n_threads = 1L, ...) {
  method <- match.arg(method)
  inp <- blockwise_inputs(data, y, task, blocks, anchor)
  fit <- function(...) rinterop()$blockwise_baseline_fit(
    method, columns = inp$columns, task = inp$task, y = inp$y, block_map = inp$blocks, anchor = anchor,
    split = check_split(split), random_state = py_seed(seed), n_threads = as.integer(n_threads), ...)
  if (method == "mbi") {  # no network settings: only the split, the seed, threads and MBI's own (...)
    nets <- c("grid", "hbi_grid", "max_epochs", "hbi_max_epochs", "patience", "lr", "batch_size")
    given <- intersect(names(match.call())[-1], nets)
    if (length(given)) stop(sprintf("method \"mbi\" has no network settings; remove %s", paste(given, collapse = ", ")), call. = FALSE)
    res <- fit(...)
  } else {
    res <- fit(grid = py_grid(grid), hbi_grid = py_grid(hbi_grid), max_epochs = as.integer(max_epochs),
               hbi_max_epochs = as.integer(hbi_max_epochs), patience = as.integer(patience), lr = lr,
               batch_size = as.integer(batch_size), ...)
  }
  out <- rmse_frame(res$rmse)
  attr(out, "method") <- method
  out
}

# Validated block-wise inputs as plain lists for Python.
blockwise_inputs <- function(data, y, task, blocks, anchor) {
  if (!is.data.frame(data)) stop("data must be a data.frame", call. = FALSE)
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
  if (!is.data.frame(grid)) stop("grid must be \"small\", \"code\", \"paper\" or a data.frame of configurations", call. = FALSE)
  lapply(seq_len(nrow(grid)), function(i) as.list(grid[i, , drop = FALSE]))
}

check_blocks <- function(blocks, anchor) {
  if (!is.list(blocks) || is.null(names(blocks)) || any(names(blocks) == "")) {
    stop("blocks must be a named list: block name -> its column names (the anchor and one block per task)", call. = FALSE)
  }
  if (!anchor %in% names(blocks)) stop(sprintf("anchor '%s' is not a block of 'blocks'", anchor), call. = FALSE)
  lapply(blocks, as.character)
}

# Each block must be fully observed or entirely NA within a task; block columns must be numeric.
check_block_pattern <- function(data, labels, blocks, check_numeric) {
  for (b in names(blocks)) for (col in blocks[[b]]) {
    v <- data[[col]]
    if (check_numeric && !is.numeric(v) && !is.logical(v)) {
      stop(sprintf("block '%s', column '%s' is a %s; MTL-HMB needs numeric columns (make dummies with model.matrix())",
                   b, col, if (is.factor(v)) "factor" else class(v)[1]), call. = FALSE)
    }
  }
  for (t in unique(labels)) {
    rows <- which(labels == t)
    for (b in names(blocks)) {
      na <- is.na(as.matrix(data[rows, blocks[[b]], drop = FALSE]))
      if (any(na) && !all(na)) {
        j <- which(colSums(na) > 0)[1]; col <- blocks[[b]][j]; bad <- rows[na[, j]]
        stop(sprintf("task '%s', block '%s': column '%s' has %d missing value(s) (rows %s) but the block is observed in this task; a block must be fully observed or fully NA within a task",
                     t, b, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")), call. = FALSE)
      }
    }
  }
  invisible(TRUE)
}

# ---------------------------------------------------------------------------------------- methods
predict.hetmtl_mtl <- function(object, newdata, ...) {
  if (missing(newdata) || !is.data.frame(newdata)) stop("newdata must be a data.frame with the task column", call. = FALSE)
  labels <- task_labels(newdata, object$task)
  check_known_tasks(labels, object$tasks, object$task)
  ri <- rinterop()
  if (inherits(object, "hetmtl_dual_encoder")) {
    X <- new_design(object, newdata)
    if (!identical(colnames(X), object$x_cols)) {
      stop(sprintf("newdata gives feature columns %s; the model has %s", paste(colnames(X), collapse = ", "),
                   paste(object$x_cols, collapse = ", ")), call. = FALSE)
    }
    out <- ri$dual_encoder_predict(object$model_json, as_py_list(X), nrow(X), ncol(X), as.list(labels))
  } else {
    anchor <- names(object$blocks)[1]
    need <- unique(unlist(lapply(unique(labels), function(t) c(object$blocks[[anchor]], object$blocks[[object$private[[t]]]]))))
    check_columns(newdata, need, "block")
    for (t in unique(labels)) {
      own <- c(anchor, object$private[[t]])
      rows <- which(labels == t)
      for (b in own) for (col in object$blocks[[b]]) {
        v <- newdata[[col]][rows]
        if (is.factor(v) || is.character(v)) stop(sprintf("block '%s', column '%s' must be numeric", b, col), call. = FALSE)
        if (anyNA(v)) {
          bad <- rows[is.na(v)]
          stop(sprintf("task '%s', block '%s': column '%s' has %d missing value(s) (rows %s); prediction needs the task's anchor and own block",
                       t, b, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")), call. = FALSE)
        }
      }
    }
    out <- ri$mtl_hmb_predict(object$model_json, lapply(newdata[need], as_py_list), as.list(labels))
  }
  unlist(out)
}

print.hetmtl_mtl <- function(x, ...) {
  cat(sprintf("<%s> %s, %d tasks\n", class(x)[1], x$family, length(x$tasks)))
  sel <- selected_string(x)
  cat("Selected:", sel, "\n\n")
  print(x$rmse, row.names = FALSE, digits = 4)
  invisible(x)
}

selected_string <- function(x) {
  s <- x$selected
  s <- s[!vapply(s, is.null, logical(1))]
  paste(sprintf("%s = %s", names(s), vapply(s, function(v) paste(format(v, digits = 4), collapse = ","), "")), collapse = ", ")
}

summary.hetmtl_mtl <- function(object, ...) {
  structure(list(call = object$call, family = object$family, rmse = object$rmse, selected = object$selected,
                 selection = object$selection, tasks = object$tasks, label = selected_string(object)),
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
  res <- rinterop()$simulate_encoders(design = design, n_test = as.integer(n_test), test_seed = py_seed(test_seed),
                                      n_tasks = as.integer(n_tasks), n = as.list(as.integer(n)), d = as.integer(d),
                                      random_state = py_seed(seed), ...)
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
  if (!is.null(setting) && is.null(value)) stop("a setting needs its value (e.g. setting = \"D\", value = 200)", call. = FALSE)
  int_list <- function(v) if (is.null(v)) NULL else as.list(as.integer(v))
  dbl_list <- function(v) if (is.null(v)) NULL else as.list(as.double(v))
  res <- rinterop()$simulate_blockwise(setting = setting, value = value, n = int_list(n),
                                       p0 = if (is.null(p0)) NULL else as.integer(p0), p_private = int_list(p_private),
                                       rho = dbl_list(rho), alpha = alpha, sigma = dbl_list(sigma),
                                       n_tasks = if (is.null(n_tasks)) NULL else as.integer(n_tasks),
                                       linear = linear, gaussian = gaussian, seed = py_seed(seed))
  list(data = columns_to_frame(res$data), blocks = lapply(res$block_map, unlist), mean = unlist(res$mean),
       params = lapply(res$params, unlist))
}
