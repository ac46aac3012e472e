fusion_data <- function() make_sites(n_sites = 5, n = 70, seed = 21)

test_that("late_fusion round trip from a site_dml fit, equal to Python to 1e-10", {
  skip_if_no_hetmtl()
  dml <- site_dml(y ~ x1 + x2, data = fusion_data(), treatment = "treat", site = "site", model = "ate",
                  n_folds = 3L, seed = 4L)
  fit <- late_fusion(dml, penalty = "group", C = 1, seed = 9L)
  expect_s3_class(fit, "hetmtl_fusion")
  expect_output(print(fit), "group penalty, C = 1")
  expect_output(print(fit), "robust empirical Bayes")
  out <- capture.output(print(summary(fit)))
  expect_true(any(grepl("site intervals: robust empirical Bayes", out)))
  expect_false(any(grepl("Pr\\(>", out)))  # no tests or stars for shrunk estimates
  cf <- coef(fit)
  expect_length(cf, 5)
  ci80 <- confint(fit, level = 0.8)
  expect_equal(nrow(ci80), 6)  # five sites and the centre
  expect_error(confint(fit, level = 0.85), "refit with late_fusion")
  expect_error(confint(fit, level = -0.5), "strictly between 0 and 1")
  # the same fit in Python, through the same summaries
  lf <- reticulate::import("hetmtl.latefusion", convert = FALSE)
  ri <- reticulate::import("hetmtl.rinterop")
  sums <- lapply(unname(dml$summaries), function(t) lf$SiteSummary$from_json(t))
  py <- lf$LateFusion(penalty = "group", C = 1, random_state = 9L)$fit(sums)
  expect_equal(unname(cf), unlist(ri$plain(py$coef_$ravel())), tolerance = 1e-10)
  pci <- ri$plain(py$confint(level = 0.8))
  expect_equal(unname(ci80[, 1]), unlist(pci$data[["10 %"]]), tolerance = 1e-10)
  expect_equal(unname(ci80[, 2]), unlist(pci$data[["90 %"]]), tolerance = 1e-10)
  td <- tidy(fit)
  expect_true(all(c("ci.estimate", "ci.method", "conf.low") %in% names(td)))
  expect_equal(unique(td$ci.method), "robust_eb")
  expect_error(vcov(fit), "group penalty has no covariance")
  f <- tempfile(fileext = ".pdf"); grDevices::pdf(f); plot(fit); grDevices::dev.off()
  expect_true(file.exists(f))
})

test_that("late_fusion from summary files; squared penalty: robust EB, vcov, pooling limit", {
  skip_if_no_hetmtl()
  dml <- site_dml(y ~ x1 + x2, data = fusion_data(), treatment = "treat", site = "site", model = "plr",
                  n_folds = 3L, seed = 5L)
  dir <- tempfile(); dir.create(dir)
  files <- file.path(dir, paste0(names(dml$summaries), ".json"))
  for (i in seq_along(files)) writeLines(dml$summaries[[i]], files[i])
  fit <- late_fusion(files, penalty = "squared", tau2 = "dl")
  tab <- as.data.frame(fit)
  # robust EB intervals surround the fused estimates and are at least the Wald width of their SE
  expect_equal(tab$ci.estimate, tab$estimate, tolerance = 1e-12)
  expect_true(all(tab$conf.high - tab$estimate >= stats::qnorm(0.975) * tab$std.error - 1e-12))
  V <- vcov(fit)
  expect_equal(sqrt(diag(V)), tab$std.error, ignore_attr = TRUE, tolerance = 1e-10)
  cond <- late_fusion(files, penalty = "squared", tau2 = "dl", ci = "conditional")
  expect_match(cond$header[["site intervals"]], "conditional on the site effects")
  # huge C pools completely: every site gets the centre
  pooled <- late_fusion(files, penalty = "squared", C = 1e12)
  expect_equal(unname(coef(pooled)), rep(pooled$centre$coef, 5), tolerance = 1e-8)
  expect_error(late_fusion(file.path(dir, "nope.json")), "summary file\\(s\\) not found")
  writeLines("{ broken", files[1])
  expect_error(late_fusion(files), "not valid JSON")
})

test_that("published estimates: the random-effects centre equals metafor's", {
  skip_if_no_hetmtl()
  skip_if_not_installed("metafor")
  bcg <- data.frame(trial = 1:13,  # the BCG vaccine trials (Colditz et al. 1994), as in metafor's examples
                    tpos = c(4, 6, 3, 62, 33, 180, 8, 505, 29, 17, 186, 5, 27),
                    tneg = c(119, 300, 228, 13536, 5036, 1361, 2537, 87886, 7470, 1699, 50448, 2493, 16886),
                    cpos = c(11, 29, 11, 248, 47, 372, 10, 499, 45, 65, 141, 3, 29),
                    cneg = c(128, 274, 209, 12619, 5761, 1079, 619, 87892, 7232, 1600, 27197, 2338, 17825))
  dat <- metafor::escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = bcg)
  est <- data.frame(site = paste("trial", dat$trial), estimate = as.numeric(dat$yi), se = sqrt(as.numeric(dat$vi)))
  ref <- metafor::rma(yi, vi, data = dat, method = "REML", test = "knha")
  fit <- late_fusion(est, penalty = "squared", tau2 = "reml")
  expect_equal(fit$centre$coef, as.numeric(ref$b), tolerance = 1e-6)
  expect_equal(fit$centre[["std err"]], ref$se, tolerance = 1e-6)
  ci <- confint(fit)
  expect_equal(unname(ci["(centre):theta", ]), c(ref$ci.lb, ref$ci.ub), tolerance = 1e-6)
  expect_equal(unname(coef(fit)), as.numeric(metafor::blup(ref)$pred), tolerance = 1e-6)
  expect_true(is.na(fit$table$n[1]))
  expect_match(fit$header[["input"]], "published estimates")
  expect_error(late_fusion(est[, c("site", "estimate")]), "lacks column\\(s\\) se")
})

test_that("built-in data and simulators come back as data.frames", {
  skip_if_no_hetmtl()
  ihdp <- ihdp_data()
  expect_equal(dim(ihdp), c(985L, 31L))
  expect_equal(sum(is.na(ihdp[["iqsb.36"]])), 77)
  expect_setequal(unique(ihdp$site), 1:8)
  sim <- simulate_latefusion(scenario = 3L, n_sites = 10L, eta = 0.2, seed = 3L)
  expect_equal(length(unique(sim$data$site)), 10)
  expect_equal(dim(sim$theta), c(10L, 1L))
  expect_equal(sum(sim$outlier), 1)
  py <- reticulate::import("hetmtl.latefusion.simulate")$make_latefusion_data(3L, n_sites = 10L, eta = 0.2, random_state = 3L)
  expect_equal(sim$data$y, as.numeric(reticulate::import("hetmtl.rinterop")$plain(py$data$y)), tolerance = 1e-12)
})
