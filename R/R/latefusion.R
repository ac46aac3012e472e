# Per-site double machine learning (late-fusion Step 1).

site_dml <- function(formula, data, treatment, site, model = c("plr", "ate", "cate", "blp"),
                     modifiers = NULL, n_folds = 5L, n_rep = NULL, clip = 0.01, seed = NULL, n_jobs = 1L) {
  model <- match.arg(model)
  if (!inherits(formula, "formula") || length(formula) != 3) stop("formula must be two-sided: y ~ x1 + x2 + ...", call. = FALSE)
  if (!is.data.frame(data)) stop("data must be a data.frame", call. = FALSE)
  for (col in c(treatment, site)) if (!col %in% names(data)) stop(sprintf("column '%s' not in data", col), call. = FALSE)
  yname <- all.vars(formula[[2]])
  if (!yname %in% names(data)) stop(sprintf("outcome column '%s' not in data", yname), call. = FALSE)
  y <- as_double_vector(data[[yname]], yname)
  d <- as_treatment(data[[treatment]], treatment)
  X <- design_matrix(formula[-2], data, "covariate")
  Z <- NULL
  if (!is.null(modifiers)) Z <- design_matrix(modifiers, data, "modifier")
  if (anyNA(data[[site]])) stop(sprintf("site column '%s' has missing values", site), call. = FALSE)
  res <- rinterop()$multisite_dml(
    y = as_py_list(y), d = as_py_list(d), x = as_py_list(X), nrow = nrow(X), x_cols = as.list(colnames(X)),
    site = as.list(as.character(data[[site]])), z = if (is.null(Z)) NULL else as_py_list(Z),
    z_cols = if (is.null(Z)) NULL else as.list(colnames(Z)), y_col = yname, d_col = treatment,
    model = model, n_folds = as.integer(n_folds), n_rep = if (is.null(n_rep)) NULL else as.integer(n_rep), clip = clip,
    random_state = if (is.null(seed)) NULL else as.integer(seed), n_jobs = as.integer(n_jobs)
  )
  new_hetmtl_dml(res, model, match.call())
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
