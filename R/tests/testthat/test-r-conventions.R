# Issue 23: formulas through model.frame, explicit treatment coding, learners by name, Python
# warnings and errors as R conditions, the complete S3 set, argument validation.

dml_fit <- function(formula, df, ...) {
  site_dml(formula, df, "treat", "site", model = "ate", n_folds = 3L, seed = 7L, ...)
}

test_that("a transformed response equals the pre-transformed column (log(y) ~ ...)", {
  skip_if_no_hetmtl()
  df <- make_sites()
  df$ly <- log(df$y + 10)
  a <- dml_fit(log(y + 10) ~ x1 + x2, df)
  b <- dml_fit(ly ~ x1 + x2, df)
  plain <- dml_fit(y ~ x1 + x2, df)
  expect_equal(coef(a), coef(b), tolerance = 1e-12)
  expect_false(isTRUE(all.equal(coef(a), coef(plain))))
  expect_equal(a$y_name, "log(y + 10)")
  # the dual encoder too
  sim <- simulate_encoders(n_tasks = 2L, n = 30L, d = 2L, seed = 1L)$data
  sim$ly <- log(sim$y + 20)
  fa <- suppressWarnings(dual_encoder(log(y + 20) ~ x1 + x2, sim, task = "task", n_shared = 1L, n_specific = 1L,
                                      hidden = 4L, max_epochs = 3L, seed = 1L))
  fb <- suppressWarnings(dual_encoder(ly ~ x1 + x2, sim, task = "task", n_shared = 1L, n_specific = 1L,
                                      hidden = 4L, max_epochs = 3L, seed = 1L))
  expect_equal(fitted(fa), fitted(fb), tolerance = 1e-12)
  expect_equal(fa$y, sim$ly, tolerance = 1e-12)
})

test_that("'.', interactions, factors with R names and subset go through model.frame", {
  skip_if_no_hetmtl()
  df <- make_sites()
  fit <- suppressWarnings(dml_fit(y ~ ., df))  # (poor overlap warnings: small sites, many columns)
  expect_equal(fit$x_cols, c("x1", "x2", "grpb", "grpc"))  # treatment and site left out of '.'
  fit <- suppressWarnings(dml_fit(y ~ x1 * grp, df))
  expect_equal(fit$x_cols, c("x1", "grpb", "grpc", "x1:grpb", "x1:grpc"))
  sub <- suppressWarnings(dml_fit(y ~ x1 + x2, df, subset = x1 > -1))
  ref <- suppressWarnings(dml_fit(y ~ x1 + x2, df[df$x1 > -1, ]))
  expect_equal(coef(sub), coef(ref), tolerance = 1e-12)
  expect_equal(nobs(sub), sum(df$x1 > -1))
  expect_error(dml_fit(y ~ x1 + treat, df), "column 'treat' is the treatment and cannot be among", class = "hetmtl_input_error")
  expect_error(dml_fit(y ~ x1 + site, df), "column 'site' is the site", class = "hetmtl_input_error")
  expect_error(dml_fit(y ~ x1, df, weights = rep(1, nrow(df))), "no observation weights", class = "hetmtl_input_error")
})

test_that("na.fail by default; na.omit drops rows and reports them per site", {
  skip_if_no_hetmtl()
  df <- make_sites()
  df$x1[c(3, 70, 75)] <- NA
  expect_error(dml_fit(y ~ x1 + x2, df), "covariate column 'x1' has 3 missing value\\(s\\) \\(rows 3, 70, 75\\)",
               class = "hetmtl_input_error")
  expect_message(fit <- dml_fit(y ~ x1 + x2, df, na.action = na.omit),
                 "na.omit dropped 3 row\\(s\\) with missing values \\(S1: 1, S2: 2\\)")
  expect_equal(fit$na_dropped$dropped, c(1L, 2L))
  expect_equal(unname(unclass(fit$na.action)), c(3L, 70L, 75L))
  expect_equal(nobs(fit), nrow(df) - 3L)
  expect_equal(glance(fit)$n.dropped, 3L)
  expect_output(print(fit), "3 row\\(s\\) dropped by na.omit")
  ref <- dml_fit(y ~ x1 + x2, df[-c(3, 70, 75), ])
  expect_equal(coef(fit), coef(ref), tolerance = 1e-12)
  expect_error(dml_fit(y ~ x1, df, na.action = na.exclude), "na.action must be na.fail", class = "hetmtl_input_error")
})

test_that("a factor treatment needs treated =; the chosen level is stored and printed", {
  skip_if_no_hetmtl()
  df <- make_sites()
  df$arm <- factor(ifelse(df$treat == 1, "active", "placebo"))
  fit_arm <- function(...) site_dml(y ~ x1 + x2, df, "arm", "site", model = "ate", n_folds = 3L, seed = 7L, ...)
  expect_error(fit_arm(), "levels \"active\", \"placebo\": say which is the treated arm", class = "hetmtl_input_error")
  expect_error(fit_arm(treated = "verum"), "treated must be one of the levels", class = "hetmtl_input_error")
  active <- fit_arm(treated = "active")
  placebo <- fit_arm(treated = "placebo")
  num <- dml_fit(y ~ x1 + x2, df)  # 0/1: 1 is treated
  expect_equal(coef(active), coef(num), tolerance = 1e-10)
  expect_equal(unname(coef(placebo)), -unname(coef(active)), tolerance = 0.05)  # the sign flips with the arm
  expect_equal(active$treatment$treated, "active")
  expect_equal(active$treatment$control, "placebo")
  expect_output(print(active), "'arm' = \"active\" is treated \\(vs \"placebo\"\\)")
  expect_output(print(summary(active)), "'arm' = \"active\" is treated")
  expect_equal(glance(active)$treated, "active")
  lf <- late_fusion(active, C = 1)
  expect_output(print(lf), "'arm' = \"active\" is treated")
  expect_output(print(summary(lf)), "'arm' = \"active\" is treated")
  expect_error(dml_fit(y ~ x1, df, treated = "yes"), "treatment column 'treat' is 0/1: treated must be 1")
})

test_that("nuisance learners by name or as Python objects", {
  skip_if_no_hetmtl()
  df <- make_sites()
  lrn <- hetmtl_learners()
  expect_equal(lrn$name, c("default", "forest", "lasso", "ridge", "boosting", "logistic"))
  fit <- dml_fit(y ~ x1 + x2, df, ml_outcome = "lasso", ml_treatment = "logistic")
  expect_match(fit$settings$learners[1], "LassoCV")
  expect_match(fit$settings$learners[2], "LogisticRegression")
  expect_false(isTRUE(all.equal(coef(fit), coef(dml_fit(y ~ x1 + x2, df)))))
  skl <- reticulate::import("sklearn.linear_model")
  obj <- dml_fit(y ~ x1 + x2, df, ml_outcome = skl$LinearRegression())
  expect_equal(obj$settings$learners[1], "LinearRegression")
  expect_error(dml_fit(y ~ x1, df, ml_outcome = "svm"), "unknown learner \"svm\"", class = "hetmtl_input_error")
  expect_error(dml_fit(y ~ x1, df, ml_outcome = "logistic"), "learner 'logistic' is a classifier",
               class = "hetmtl_input_error")
})

test_that("Python warnings are R warnings: tryCatch(warning=), suppressWarnings(), classes", {
  skip_if_no_hetmtl()
  sim <- simulate_blockwise(n = 60L, p0 = 4L, p_private = 2L, seed = 5L)
  mbi <- function() blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "mbi", seed = 2L, nlam = 6L)
  w <- tryCatch(mbi(), warning = function(w) w)
  expect_s3_class(w, "hetmtl_warning")
  expect_s3_class(w, "warning")
  expect_match(conditionMessage(w), "MBI is not identified here")
  expect_silent(fit <- suppressWarnings(mbi()))
  expect_s3_class(fit, "hetmtl_blockwise")
  df <- simulate_encoders(n_tasks = 2L, n = 30L, d = 2L, seed = 1L)$data
  expect_warning(dual_encoder(y ~ x1 + x2, df, task = "task", hidden = 4L, max_epochs = 2L, seed = 1L),
                 "stopped at max_epochs=2", class = "hetmtl_convergence_warning")
})

test_that("Python errors are classed R conditions with R-style text; unknown arguments refused", {
  skip_if_no_hetmtl()
  df <- make_sites()
  e <- tryCatch(dml_fit(y ~ x1, df[df$site != "S3" | df$treat == 1, ]), error = function(e) e)
  expect_s3_class(e, "hetmtl_input_error")
  expect_s3_class(e, "hetmtl_error")
  expect_false(inherits(e, "Rcpp::exception"))
  expect_match(conditionMessage(e), "^site 'S3', column 'treat': treatment is constant")
  expect_false(grepl("Error:|ValueError", conditionMessage(e)))
  sim <- simulate_encoders(n_tasks = 2L, n = 30L, d = 2L, seed = 1L)$data
  e <- tryCatch(dual_encoder(y ~ x1, sim, task = "task", foo = 1), error = function(e) e)
  expect_s3_class(e, "hetmtl_input_error")
  expect_match(conditionMessage(e), "dual_encoder\\(\\) has no argument\\(s\\) foo")
  expect_error(simulate_encoders("latent", 2L, 30L, 2L, 5), "every extra argument in ... must be named",
               class = "hetmtl_input_error")
  expect_error(site_dml(y ~ x1, df, "treat", "site", foo = 1), "unused argument")
})

test_that("integer and level arguments are validated in R", {
  skip_if_no_hetmtl()
  df <- make_sites()
  expect_error(dml_fit(y ~ x1, df, n_rep = 2.5), "n_rep must be a whole number at least 1 \\(or NULL\\), got 2.5",
               class = "hetmtl_input_error")
  expect_error(site_dml(y ~ x1, df, "treat", "site", n_folds = 2.5), "n_folds must be a whole number", class = "hetmtl_input_error")
  expect_error(site_dml(y ~ x1, df, "treat", "site", n_folds = "5"), "n_folds must be a whole number")
  expect_error(site_dml(y ~ x1, df, "treat", "site", seed = -1), "seed must be a whole number")
  sim <- simulate_encoders(n_tasks = 2L, n = 30L, d = 2L, seed = 1L)$data
  expect_error(dual_encoder(y ~ x1, sim, task = "task", max_epochs = 10.5), "max_epochs must be a whole number")
  fit <- dml_fit(y ~ x1, df)
  for (lv in list(-0.5, 0, 1, 95, NA, c(0.9, 0.95), "0.9"))
    expect_error(confint(fit, level = lv), "level must be one number strictly between 0 and 1", class = "hetmtl_input_error")
  expect_equal(colnames(confint(fit, level = 0.9)), c("5 %", "95 %"))
  lf <- late_fusion(fit, C = 1)
  expect_error(confint(lf, level = 95), "strictly between 0 and 1", class = "hetmtl_input_error")
})

test_that("site_dml and late_fusion: the complete S3 set", {
  skip_if_no_hetmtl()
  df <- make_sites(n_sites = 4, n = 60, seed = 2)
  fit <- site_dml(y ~ x1 + x2, df, "treat", "site", model = "cate", modifiers = ~ x1, n_folds = 3L, seed = 1L)
  expect_named(coef(fit), paste(rep(paste0("S", 1:4), each = 2), c("const", "x1"), sep = ":"))
  expect_equal(nobs(fit), nrow(df))
  expect_error(fitted(fit), "no fitted values", class = "hetmtl_unsupported_error")
  expect_error(residuals(fit), "no residuals", class = "hetmtl_unsupported_error")
  p <- predict(fit, df[1:5, ], se.fit = TRUE)
  b <- coef(fit)[c("S1:const", "S1:x1")]
  expect_equal(p$fit, unname(b[1] + b[2] * df$x1[1:5]), tolerance = 1e-12)
  expect_true(all(p$se.fit > 0))
  expect_equal(nrow(glance(fit)), 1L)
  out <- capture.output(print(summary(fit)))
  expect_false(any(grepl("\\*|Signif. codes", out)))  # no stars, so no legend needed
  expect_true(any(grepl("z value", out)))
  f <- tempfile(fileext = ".pdf"); grDevices::pdf(f); plot(fit); grDevices::dev.off()
  expect_true(file.size(f) > 0)
  lf <- late_fusion(fit, penalty = "squared", C = 1)
  V <- vcov(lf)
  expect_equal(dim(V), c(8L, 8L))
  expect_equal(rownames(V), names(coef(lf)))
  expect_equal(fitted(lf), coef(lf))
  expect_equal(unname(residuals(lf)), lf$table$dml.estimate - lf$table$estimate)
  expect_equal(nobs(lf), 4L)
  expect_equal(glance(lf)$n.sites, 4L)
  expect_length(predict(lf, df[1:3, ]), 3)
  grp <- late_fusion(fit, C = 1)
  expect_error(vcov(grp), "group penalty has no covariance", class = "hetmtl_unsupported_error")
  boot <- late_fusion(fit, C = 1, ci = "bootstrap", n_boot = 50L, seed = 1L)
  Vb <- vcov(boot)
  expect_equal(dim(Vb), c(8L, 8L))
  expect_true(all(diag(Vb) >= 0))
  expect_match(attr(Vb, "note"), "bootstrap")
})

test_that("dual encoder and block-wise fits: the complete S3 set, honest about coefficients", {
  skip_if_no_hetmtl()
  sim <- simulate_encoders(n_tasks = 2L, n = 40L, d = 3L, seed = 1L)$data
  fit <- suppressWarnings(dual_encoder(y ~ x1 + x2 + x3, sim, task = "task", n_shared = 1L, n_specific = 1L,
                                       hidden = 4L, max_epochs = 5L, seed = 2L))
  expect_error(coef(fit), "no coefficients on them", class = "hetmtl_unsupported_error")
  expect_error(vcov(fit), "no standard errors", class = "hetmtl_unsupported_error")
  expect_error(confint(fit), "no confidence intervals", class = "hetmtl_unsupported_error")
  expect_equal(fitted(fit), predict(fit, sim), tolerance = 1e-10, ignore_attr = TRUE)
  expect_equal(unname(residuals(fit)), sim$y - unname(fitted(fit)), tolerance = 1e-12)
  expect_equal(nobs(fit), nrow(sim))
  expect_equal(glance(fit)$n.tasks, 2L)
  lin <- suppressWarnings(dual_encoder(y ~ x1 + x2 + x3, sim, task = "task", n_shared = 1L, n_specific = 1L,
                                       hidden = integer(0), max_epochs = 5L, seed = 2L))
  cf <- coef(lin)
  expect_equal(dimnames(cf), list(c("task1", "task2"), c("(Intercept)", "x1", "x2", "x3")))
  nd <- sim[sim$task == "task2", ][1:4, ]
  expect_equal(predict(lin, nd), drop(cbind(1, as.matrix(nd[, c("x1", "x2", "x3")])) %*% cf["task2", ]),
               tolerance = 1e-5, ignore_attr = TRUE)
  bw <- simulate_blockwise(n = 60L, p0 = 4L, p_private = 2L, seed = 5L)
  stl <- blockwise_baseline(bw$data, "y", "task", bw$blocks, method = "stl", grid = data.frame(width = 6L, depth = 2L),
                            max_epochs = 5L, seed = 2L)
  expect_s3_class(stl, "hetmtl_blockwise")
  expect_output(print(stl), "block-wise baseline STL, 2 tasks")
  test <- stl$split == "test" & stl$task_of_row == "task1"
  expect_equal(sqrt(mean(residuals(stl)[test]^2)), stl$rmse$rmse_test[1], tolerance = 1e-6)
  expect_equal(nobs(stl), nrow(bw$data))
  expect_error(coef(stl), "no coefficients", class = "hetmtl_unsupported_error")
  expect_error(predict(stl, bw$data), "not the model", class = "hetmtl_unsupported_error")
  expect_true(all(c("rmse.train", "rmse.test") %in% names(glance(stl))))
  expect_equal(nrow(tidy(stl)), 6L)
})

test_that("dual_encoder_cv tunes by cross-validation (DualEncoderMTLCV) and gives the same S3 set", {
  skip_if_no_hetmtl()
  sim <- simulate_encoders(n_tasks = 2L, n = 40L, d = 3L, seed = 1L)$data
  fit <- suppressWarnings(dual_encoder_cv(y ~ x1 + x2 + x3, sim, task = "task", cv = 2L, seed = 1L, max_epochs = 5L,
                                          param_grid = list(lam = c(0.01, 0.3), hidden = list(integer(0), 4L))))
  expect_s3_class(fit, "hetmtl_dual_encoder")
  expect_equal(nrow(fit$selection), 4L)
  expect_true(all(c("mean_val_mse_sum", "rank") %in% names(fit$selection)))
  best <- fit$selection[fit$selection$rank == 1, ]
  expect_equal(as.numeric(fit$selected$lam_alpha), best$param_lam_alpha[1])
  expect_equal(nobs(fit), nrow(sim))
  expect_true(all(c("rmse_train", "rmse_test") %in% names(fit$rmse)))
  expect_equal(unname(predict(fit, sim[1:5, ])), unname(fitted(fit)[1:5]), tolerance = 1e-10)
  expect_error(dual_encoder_cv(y ~ x1, sim, task = "task", cv = 2.5), "cv must be a whole number of folds",
               class = "hetmtl_input_error")
  expect_error(dual_encoder_cv(y ~ x1, sim, task = "task", param_grid = list(0.1)), "param_grid must be a named list")
})

test_that("blockwise_baseline accepts the complete-case lasso and refuses network settings for it", {
  skip_if_no_hetmtl()
  sim <- simulate_blockwise(n = 60L, p0 = 4L, p_private = 2L, seed = 5L)
  expect_error(blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "cc_lasso", max_epochs = 5L),
               "method \"cc_lasso\" has no network settings; remove max_epochs", class = "hetmtl_input_error")
  # without a row observing every block the complete-case fit is refused in Python, as a classed R error
  expect_error(blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "cc_lasso", seed = 1L),
               "no row of this BlockwiseData observes every block", class = "hetmtl_input_error")
})

test_that("subset in the block-wise functions; site covariates reach late_fusion as plain lists", {
  skip_if_no_hetmtl()
  sim <- simulate_blockwise(n = 60L, p0 = 4L, p_private = 2L, seed = 5L)
  keep <- seq_len(nrow(sim$data)) %% 6 != 0
  stl <- blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "stl", grid = data.frame(width = 6L, depth = 2L),
                            max_epochs = 3L, seed = 2L, subset = keep)
  ref <- blockwise_baseline(sim$data[keep, ], "y", "task", sim$blocks, method = "stl",
                            grid = data.frame(width = 6L, depth = 2L), max_epochs = 3L, seed = 2L)
  expect_equal(nobs(stl), sum(keep))
  expect_equal(stl$rmse, ref$rmse)
  dml <- site_dml(y ~ x1 + x2, make_sites(n_sites = 5, n = 60, seed = 4), "treat", "site", model = "ate",
                  n_folds = 3L, seed = 1L)
  fit <- late_fusion(dml, penalty = "squared", tau2 = "dl", site_covariates = cbind(size = c(1, 2, 3, 4, 5)))
  expect_length(coef(fit), 5)
  expect_error(late_fusion(dml, site_covariates = cbind(c(1, NA, 3, 4, 5))), "site_covariates must be a numeric",
               class = "hetmtl_input_error")
})

test_that("verbose reaches the Python progress bars and changes nothing else", {
  skip_if_no_hetmtl()
  df <- make_sites()
  quiet <- dml_fit(y ~ x1 + x2, df)
  loud <- dml_fit(y ~ x1 + x2, df, verbose = 1L)
  expect_equal(coef(loud), coef(quiet))
  expect_error(dml_fit(y ~ x1, df, verbose = 7), "verbose must be a whole number between 0 and 3",
               class = "hetmtl_input_error")
})
