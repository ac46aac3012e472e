# Per-site double machine learning (late-fusion Step 1).

site_dml <- function(formula, data, treatment, site, model = c("plr", "ate", "cate", "blp"),
                     modifiers = NULL, treated = NULL, ml_outcome = "default", ml_treatment = "default",
                     n_folds = 5L, n_rep = NULL, clip = 0.01, subset = NULL, weights = NULL,
                     na.action = stats::na.fail, seed = NULL, n_jobs = 1L, verbose = 0L) {
  model <- match.arg(model)
  check_formula(formula)
  if (!is.data.frame(data)) input_error("data must be a data.frame")
  for (arg in list(list(treatment, "treatment"), list(site, "site")))
    if (!is.character(arg[[1]]) || length(arg[[1]]) != 1L) input_error(sprintf("%s must be the name of a column of data", arg[[2]]))
  for (col in c(treatment, site)) if (!col %in% names(data)) input_error(sprintf("column '%s' not in data", col))
  no_weights(weights, "site_dml()", "the per-site DML scores are unweighted averages")
  if (!is.null(modifiers)) {
    if (!inherits(modifiers, "formula") || length(modifiers) != 2L)
      input_error("modifiers must be a one-sided formula, e.g. ~ x1 + x2")
    if (!model %in% c("cate", "blp")) input_error(sprintf("model \"%s\" takes no modifiers; use \"cate\" or \"blp\"", model))
  }
  n_folds <- check_count(n_folds, "n_folds", low = 2)
  n_rep <- check_count(n_rep, "n_rep", low = 1, null_ok = TRUE)
  n_jobs <- check_n_jobs(n_jobs)
  clip <- check_number(clip, "clip", low = 0, high = 0.5, low_open = TRUE)
  seed <- check_seed(seed)
  verbose <- check_verbose(verbose)
  ml_outcome <- check_learner(ml_outcome, "ml_outcome")
  ml_treatment <- check_learner(ml_treatment, "ml_treatment")
  rows <- eval_subset(substitute(subset), data, parent.frame())
  formulas <- list(covariate = formula)
  if (!is.null(modifiers)) formulas$modifier <- modifiers
  fr <- build_frames(formulas, data, rows, extra = list(treatment = treatment, site = site),
                     exclude = c(treatment = treatment, site = site), group_col = site, na.action = na.action,
                     fun = "site_dml()")
  tr <- code_treatment(fr$data[[treatment]], treatment, treated)
  tr$name <- treatment
  X <- fr$covariate$X
  Z <- if (is.null(modifiers)) NULL else fr$modifier$X
  args <- list("multisite_dml",
    y = as_py_list(fr$y), d = as_py_list(tr$d), x = as_py_list(X), nrow = nrow(X), x_cols = as.list(colnames(X)),
    site = as.list(as.character(fr$data[[site]])), z = if (is.null(Z)) NULL else as_py_list(Z),
    z_cols = if (is.null(Z)) NULL else as.list(colnames(Z)), y_col = fr$y_name, d_col = treatment,
    model = model, n_folds = n_folds, n_rep = n_rep, clip = clip, random_state = seed, n_jobs = n_jobs,
    ml_outcome = ml_outcome, ml_treatment = ml_treatment)
  if (verbose > 0L) args$verbose <- verbose  # only estimators with progress output accept it
  res <- do.call(hetmtl_call, args)
  fit <- new_hetmtl_dml(res, model, match.call())
  fit$treatment <- tr[c("name", "treated", "control", "binary")]
  fit$site_col <- site
  fit$y_name <- fr$y_name
  fit$x_cols <- colnames(X)
  fit$terms <- fr$terms
  if (!is.null(modifiers)) fit$modifier_xlevels <- fr$modifier$xlevels
  fit$nobs <- length(fr$rows)
  fit$na.action <- na_omit_attr(rows, fr$rows, data)
  fit$na_dropped <- fr$dropped
  fit$settings <- list(n_folds = n_folds, n_rep = unique(vapply(res$sites, function(s) as.integer(s$n_rep), 1L)),
                       clip = clip, learners = unlist(res$sites[[1]]$learners))
  fit
}

new_hetmtl_dml <- function(res, model, call) {
  rows <- list(); vcovs <- list(); summaries <- list()
  for (r in res$sites) {
    s <- r$site
    terms <- unlist(r$terms)
    V <- matrix(unlist(r$vcov), length(terms), byrow = TRUE)
    dimnames(V) <- list(paste(s, terms, sep = ":"), paste(s, terms, sep = ":"))
    vcovs[[s]] <- V
    rows[[s]] <- data.frame(site = s, term = terms, estimate = unlist(r$coef), std.error = sqrt(diag(V)),
                            n = as.integer(r$n), stringsAsFactors = FALSE)
    summaries[[s]] <- r$summary_json
  }
  table <- do.call(rbind, rows); rownames(table) <- NULL
  structure(list(table = table, vcov = vcovs, model = model, call = call, summaries = summaries,
                 notes = unlist(res$notes)),
            class = c("hetmtl_dml", "hetmtl_fit"))
}
