fusion_data <- function() make_sites(n_sites = 5, n = 70, seed = 21)

test_that("late_fusion round trip from a site_dml fit, equal to Python to 1e-10", {
  skip_if_no_hetmtl()
  dml <- site_dml(y ~ x1 + x2, data = fusion_data(), treatment = "treat", site = "site", model = "ate",
                  n_folds = 3L, seed = 4L)
  fit <- late_fusion(dml, penalty = "group", C = 1, n_boot = 200L, seed = 9L)
  expect_s3_class(fit, "hetmtl_fusion")
  expect_output(print(fit), "group penalty, C = 1")
  expect_output(print(summary(fit)), "Centre")
  cf <- coef(fit)
  expect_length(cf, 5)
  ci80 <- confint(fit, level = 0.8)
  expect_equal(nrow(ci80), 6)  # five sites and the centre
  # the same fit in Python, through the same summaries
  lf <- reticulate::import("hetmtl.latefusion", convert = FALSE)
  ri <- reticulate::import("hetmtl.rinterop")
  sums <- lapply(unname(dml$summaries), function(t) lf$SiteSummary$from_json(t))
  py <- lf$LateFusion(penalty = "group", C = 1, n_boot = 200L, random_state = 9L)$fit(sums)
  expect_equal(unname(cf), unlist(ri$plain(py$coef_$ravel())), tolerance = 1e-10)
  pci <- ri$plain(py$confint(level = 0.8))
  expect_equal(unname(ci80[, 1]), unlist(pci$data[["10 %"]]), tolerance = 1e-10)
  expect_equal(unname(ci80[, 2]), unlist(pci$data[["90 %"]]), tolerance = 1e-10)
  V <- vcov(fit)
  expect_equal(sqrt(diag(V)), fit$table$std.error, ignore_attr = TRUE)
  f <- tempfile(fileext = ".pdf"); grDevices::pdf(f); plot(fit); grDevices::dev.off()
  expect_true(file.exists(f))
})

test_that("late_fusion from summary files; squared penalty has Wald intervals", {
  skip_if_no_hetmtl()
  dml <- site_dml(y ~ x1 + x2, data = fusion_data(), treatment = "treat", site = "site", model = "plr",
                  n_folds = 3L, seed = 5L)
  dir <- tempfile(); dir.create(dir)
  files <- file.path(dir, paste0(names(dml$summaries), ".json"))
  for (i in seq_along(files)) writeLines(dml$summaries[[i]], files[i])
  fit <- late_fusion(files, penalty = "squared", tau2 = "dl")
  tab <- as.data.frame(fit)
  expect_equal(tab$conf.high - tab$estimate, stats::qnorm(0.975) * tab$std.error, tolerance = 1e-12)
  # huge C pools completely: every site gets the centre
  pooled <- late_fusion(files, penalty = "squared", C = 1e12)
  expect_equal(unname(coef(pooled)), rep(pooled$centre$estimate, 5), tolerance = 1e-8)
  expect_error(late_fusion(file.path(dir, "nope.json")), "summary file\\(s\\) not found")
  writeLines("{ broken", files[1])
  expect_error(late_fusion(files), "not valid JSON")
})
