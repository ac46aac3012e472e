test_that("site_dml round trip: print, summary, coef, vcov, confint, tidy", {
  skip_if_no_hetmtl()
  df <- make_sites()
  fit <- site_dml(y ~ x1 + x2 + grp, data = df, treatment = "treat", site = "site", model = "ate",
                  n_folds = 3L, seed = 7L)
  expect_s3_class(fit, "hetmtl_fit")
  expect_equal(nrow(fit$table), 3)
  cf <- coef(fit)
  expect_named(cf, c("S1:ATE", "S2:ATE", "S3:ATE"))
  V <- vcov(fit)
  expect_equal(dim(V), c(3L, 3L))
  expect_equal(sqrt(diag(V)), fit$table$std.error, ignore_attr = TRUE)
  ci <- confint(fit, level = 0.9)
  expect_equal(colnames(ci), c("5 %", "95 %"))
  expect_true(all(ci[, 1] < cf & cf < ci[, 2]))
  expect_output(print(summary(fit)), "Site S2")
  expect_output(print(fit), "ate fit, 3 site")
  td <- tidy(fit)
  expect_named(td, c("site", "term", "estimate", "std.error", "statistic", "p.value", "conf.low", "conf.high"))
  # a plain R object: survives serialisation without Python handles
  f <- tempfile(fileext = ".rds"); saveRDS(fit, f); back <- readRDS(f)
  expect_equal(coef(back), cf)
})

test_that("site_dml equals the Python fit to 1e-10", {
  skip_if_no_hetmtl()
  df <- make_sites(seed = 3)
  fit <- site_dml(y ~ x1 + x2, data = df, treatment = "treat", site = "site", model = "plr",
                  n_folds = 3L, seed = 11L)
  ri <- reticulate::import("hetmtl.rinterop")
  hd <- reticulate::import("hetmtl.data", convert = FALSE)
  lf <- reticulate::import("hetmtl.latefusion", convert = FALSE)
  X <- ri$matrix(as.list(c(df$x1, df$x2)), nrow(df), 2L)
  data <- hd$MultiSiteData$from_arrays(y = ri$vector(as.list(df$y)), d = ri$vector(as.list(as.double(df$treat))),
                                       X = X, site = as.list(df$site), x_cols = list("x1", "x2"))
  py <- lf$MultiSiteDML(model = "plr", n_folds = 3L, random_state = 11L, n_jobs = 1L)$fit(data)
  frame <- ri$plain(py$summary_frame())
  expect_equal(fit$table$estimate, unlist(frame$data$coef), tolerance = 1e-10)
  expect_equal(fit$table$std.error, unlist(frame$data[["std err"]]), tolerance = 1e-10)
})

test_that("linear CATE with modifiers; summaries are validated JSON", {
  skip_if_no_hetmtl()
  df <- make_sites(n = 80, seed = 5)
  fit <- site_dml(y ~ x1 + x2, data = df, treatment = "treat", site = "site", model = "cate",
                  modifiers = ~ x1, n_folds = 3L, seed = 2L)
  expect_equal(unique(fit$table$term), c("const", "x1"))
  lf <- reticulate::import("hetmtl.latefusion")
  s <- lf$SiteSummary$from_json(fit$summaries[["S1"]])
  theta <- unlist(reticulate::import("hetmtl.rinterop")$plain(s$theta))
  expect_equal(theta, fit$table$estimate[fit$table$site == "S1"], tolerance = 1e-12)
})

test_that("NA, factors and bad treatments give clear R errors", {
  skip_if_no_hetmtl()
  df <- make_sites()
  df$x2[c(4, 9)] <- NA
  expect_error(site_dml(y ~ x1 + x2, df, "treat", "site"), "covariate column 'x2' has 2 missing value\\(s\\) \\(rows 4, 9\\)")
  df <- make_sites()
  df$y[2] <- NA_integer_
  expect_error(site_dml(y ~ x1, df, "treat", "site"), "column 'y' has 1 missing value")
  df <- make_sites()
  df$treat <- factor(ifelse(df$treat == 1, "yes", "no"))
  expect_error(site_dml(y ~ x1, df, "treat", "site"), "levels \"no\", \"yes\": say which is the treated arm",
               class = "hetmtl_input_error")
  fit <- suppressWarnings(site_dml(y ~ x1, df, "treat", "site", model = "ate", n_folds = 2L, seed = 1L, treated = "yes"))
  expect_equal(nrow(fit$table), 3)
  df$treat <- factor(sample(c("a", "b", "c"), nrow(df), TRUE))
  expect_error(site_dml(y ~ x1, df, "treat", "site"), "must have exactly 2 levels")
  expect_error(site_dml(y ~ nope, make_sites(), "treat", "site"), "not in data: nope")
  df <- make_sites(); df$treat[df$site == "S2"] <- 1
  expect_error(site_dml(y ~ x1, df, "treat", "site"), "site 'S2', column 'treat': treatment is constant")
})

test_that("integer NA from R is refused, not turned into a huge number", {
  skip_if_no_hetmtl()
  df <- make_sites()
  df$x1 <- as.integer(round(df$x1 * 10))
  df$x1[5] <- NA_integer_
  expect_error(site_dml(y ~ x1, df, "treat", "site"), "covariate column 'x1' has 1 missing value")
})
