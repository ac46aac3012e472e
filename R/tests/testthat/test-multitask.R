# Dual encoder and MTL-HMB from R: round trips equal to Python, input checks, predict from JSON only.

enc_data <- function() {
  sim <- simulate_encoders(n_tasks = 3L, n = 40L, d = 3L, posterior_drift = 0.5, seed = 1L)
  df <- sim$data
  set.seed(2)
  df$grp <- factor(sample(c("a", "b", "c"), nrow(df), TRUE))
  df
}
enc_fit <- function(df) {  # short training: its convergence warnings (R warnings now) are expected
  suppressWarnings(dual_encoder(y ~ x1 + x2 + x3 + grp, data = df, task = "task", n_shared = 2L, n_specific = 2L, hidden = 6L,
               lambda = c(0.01, 0.3), max_epochs = 15L, seed = 3L))
}
hmb_data <- function() simulate_blockwise(n = 60L, p0 = 4L, p_private = 2L, seed = 5L)
hmb_grid <- data.frame(width = c(6L, 8L), depth = c(2L, 2L), lambda_orth = c(0.01, 0.1), lambda_imp = c(0.01, 0.1),
                       lambda_dr = c(0.01, 0.1))
hmb_hbi <- data.frame(width = 4L, depth = 1L, lambda_orth = 0)
hmb_fit <- function(sim) {
  mtl_hmb(sim$data, y = "y", task = "task", blocks = sim$blocks, grid = hmb_grid, hbi_grid = hmb_hbi,
          max_epochs = 10L, hbi_max_epochs = 10L, seed = 2L)
}

test_that("dual_encoder round trip (factor features) equals the Python fit to 1e-10", {
  skip_if_no_hetmtl()
  df <- enc_data()
  fit <- enc_fit(df)
  expect_s3_class(fit, "hetmtl_dual_encoder")
  expect_output(print(fit), "dual encoder, 3 tasks")
  expect_output(print(summary(fit)), "Per-task RMSE")
  cf <- latent_heads(fit)
  expect_equal(dim(cf), c(4L, 5L))
  expect_equal(rownames(cf), c("task1", "task2", "task3", "(centre)"))
  expect_equal(fit$x_cols, c("x1", "x2", "x3", "grpb", "grpc"))
  pred <- predict(fit, df)
  # the same split and fits in Python
  ri <- reticulate::import("hetmtl.rinterop")
  mt <- reticulate::import("hetmtl.data.multitask", convert = FALSE)
  enc <- reticulate::import("hetmtl.encoders", convert = FALSE)
  X <- stats::model.matrix(~ x1 + x2 + x3 + grp, df)[, -1]
  Xp <- ri$matrix(as.list(as.double(X)), nrow(X), ncol(X))
  data <- mt$MultiTaskData$from_arrays(Xp, ri$vector(as.list(df$y)), as.list(df$task), x_cols = as.list(colnames(X)))
  parts <- data$split(list(0.6, 0.2, 0.2), random_state = 3L)
  train <- reticulate::py_get_item(parts, 0L); val <- reticulate::py_get_item(parts, 1L)
  losses <- sapply(c(0.01, 0.3), function(lam) {
    m <- enc$DualEncoderMTL(n_shared = 2L, n_specific = 2L, hidden = reticulate::tuple(6L), lam_alpha = lam,
                            lam_beta = lam, max_epochs = 15L, random_state = 3L)$fit(train, validation_data = val)
    sum(unlist(ri$plain(m$score_tasks(val)$mse$to_numpy())))
  })
  expect_equal(fit$selection$val_mse_sum, losses, tolerance = 1e-10)
  lam <- c(0.01, 0.3)[which.min(losses)]
  expect_equal(fit$lambda, lam)
  py <- enc$DualEncoderMTL(n_shared = 2L, n_specific = 2L, hidden = reticulate::tuple(6L), lam_alpha = lam,
                           lam_beta = lam, max_epochs = 15L, random_state = 3L)$fit(train, validation_data = val)
  beta <- matrix(unlist(ri$plain(py$coef_$beta$numpy())), ncol = 2, byrow = TRUE)
  expect_equal(unname(cf[1:3, c("beta1", "beta2")]), beta, tolerance = 1e-10)
  expect_equal(unname(cf[4, c("alpha1", "alpha2")]), unlist(ri$plain(py$coef_$alpha_center$numpy())), tolerance = 1e-10)
  ppred <- unlist(ri$plain(py$predict(Xp, reticulate::import("numpy")$array(as.list(df$task), dtype = "object"))))
  expect_equal(pred, ppred, tolerance = 1e-10)
  td <- tidy(fit)
  expect_equal(nrow(td), 9)
  expect_equal(as.data.frame(fit)$rmse_test, td$rmse[td$part == "test"])
  f <- tempfile(fileext = ".pdf"); grDevices::pdf(f); plot(fit); grDevices::dev.off()
  expect_true(file.exists(f))
  # new rows keep the factor coding of the fit (a level subset is fine)
  nd <- df[df$grp == "c", ][1:4, ]
  expect_equal(predict(fit, nd), pred[which(df$grp == "c")[1:4]], tolerance = 1e-12)
})

test_that("dual_encoder: column interface, NA, factors and unknown tasks give clear errors", {
  skip_if_no_hetmtl()
  df <- enc_data()
  fit <- suppressWarnings(dual_encoder(data = df, task = "task", x = c("x1", "x2"), y = "y", n_shared = 1L,
                                       n_specific = 1L, hidden = 4L, max_epochs = 5L, seed = 1L, split = c(0.7, 0.3)))
  expect_false("rmse_test" %in% names(fit$rmse))
  expect_length(predict(fit, df[1:3, ]), 3)
  expect_error(dual_encoder(data = df, task = "task", x = c("x1", "grp"), y = "y"), "feature column 'grp' is a factor")
  bad <- df; bad$x2[c(3, 8)] <- NA
  expect_error(dual_encoder(y ~ x1 + x2, data = bad, task = "task"), "feature column 'x2' has 2 missing value\\(s\\) \\(rows 3, 8\\)")
  bad <- df; bad$y[5] <- NA_integer_
  expect_error(dual_encoder(y ~ x1, data = bad, task = "task"), "column 'y' has 1 missing value")
  bad <- df; bad$task[2] <- NA
  expect_error(dual_encoder(y ~ x1, data = bad, task = "task"), "task column 'task' has 1 missing value")
  nd <- df[1:3, ]; nd$task <- c("task1", "task9", "task9")
  expect_error(predict(fit, nd), "task\\(s\\) not in the fitted model: task9")
  nd <- df[1:3, ]; nd$x1[2] <- NA
  expect_error(predict(fit, nd), "feature column 'x1' has 1 missing value")
  expect_error(predict(fit, df[1:3, c("task", "x1")]), "feature column\\(s\\) not in data: x2")
  expect_error(dual_encoder(y ~ x1, data = df, task = "task", split = c(0.5, 0.2)), "summing to 1")
})

test_that("mtl_hmb round trip equals the Python fit to 1e-10", {
  skip_if_no_hetmtl()
  sim <- hmb_data()
  expect_equal(names(sim$blocks), c("x0", "x1", "x2"))
  expect_true(all(is.na(sim$data$x2_1[sim$data$task == "task1"])))
  expect_length(sim$mean, 120)
  fit <- hmb_fit(sim)
  expect_s3_class(fit, "hetmtl_mtl_hmb")
  expect_output(print(fit), "MTL-HMB, 2 tasks")
  expect_output(print(summary(fit)), "Validation loss of every configuration")
  expect_equal(unname(fit$private), c("x1", "x2"))
  pred <- predict(fit, sim$data)
  ri <- reticulate::import("hetmtl.rinterop")
  bw <- reticulate::import("hetmtl.blockwise", convert = FALSE)
  hd <- reticulate::import("hetmtl.data.blockwise", convert = FALSE)
  cols <- unlist(sim$blocks, use.names = FALSE)
  frame <- ri$`_blockwise_frame`(lapply(sim$data[cols], as_list <- function(v) as.list(as.double(v))),
                                  as.list(sim$data$task), as.list(sim$data$y))
  data <- hd$BlockwiseData$from_dataframe(frame, lapply(sim$blocks, as.list), ".task", ".y", anchor = "x0")
  split <- bw$make_split(data, list(0.6, 0.2, 0.2), seed = 2L)
  grid <- lapply(seq_len(nrow(hmb_grid)), function(i) as.list(hmb_grid[i, ]))
  py <- bw$MTLHMB(grid = grid, hbi_grid = list(list(width = 4L, depth = 1L, lambda_orth = 0)), max_epochs = 10L,
                  hbi_max_epochs = 10L, random_state = 2L)$fit(data, split)
  expect_equal(fit$rmse$rmse_test, unlist(ri$plain(py$test_rmse_$to_numpy())), tolerance = 1e-10)
  t2 <- sim$data$task == "task2"
  X2 <- as.matrix(sim$data[t2, c(sim$blocks$x0, sim$blocks$x2)])
  ppred <- unlist(ri$plain(py$predict(ri$matrix(as.list(as.double(X2)), nrow(X2), ncol(X2)), "task2")))
  expect_equal(pred[t2], ppred, tolerance = 1e-10)
  expect_equal(fit$selected$width, unlist(ri$plain(py$selected_config_))[["width"]])
  expect_equal(nrow(tidy(fit)), 6)
  f <- tempfile(fileext = ".pdf"); grDevices::pdf(f); plot(fit); grDevices::dev.off()
  expect_true(file.exists(f))
  # prediction needs only the task's anchor and own block (a float32 model: another number of rows
  # changes the summation order of the matrix products, hence float32 rounding, not 1e-12)
  nd <- sim$data[t2, c("task", sim$blocks$x0, sim$blocks$x2)][1:3, ]
  expect_equal(predict(fit, nd), pred[t2][1:3], tolerance = 1e-6)
})

test_that("mtl_hmb: block patterns, factors, NA and unknown tasks give clear errors", {
  skip_if_no_hetmtl()
  sim <- hmb_data()
  bad <- sim$data; bad$x1_2[c(2, 7)] <- NA
  expect_error(mtl_hmb(bad, "y", "task", sim$blocks),
               "task 'task1', block 'x1': column 'x1_2' has 2 missing value\\(s\\) \\(rows 2, 7\\)")
  bad <- sim$data; bad$x0_1 <- factor(bad$x0_1 > 0)
  expect_error(mtl_hmb(bad, "y", "task", sim$blocks), "block 'x0', column 'x0_1' is a factor")
  bad <- sim$data; bad$y[4] <- NA
  expect_error(mtl_hmb(bad, "y", "task", sim$blocks), "column 'y' has 1 missing value")
  expect_error(mtl_hmb(sim$data, "y", "task", list(x0 = sim$blocks$x0, x1 = "nope")), "block column\\(s\\) not in data: nope")
  bad <- sim$data; bad[bad$task == "task2", sim$blocks$x1] <- 1  # task2 observes two private blocks
  expect_error(mtl_hmb(bad, "y", "task", sim$blocks, max_epochs = 2L), "exactly one private block")
  fit <- hmb_fit(sim)
  nd <- sim$data[sim$data$task == "task1", ][1:3, ]
  nd$x1_1[2] <- NA
  expect_error(predict(fit, nd), "task 'task1', block 'x1': column 'x1_1' has 1 missing value")
  nd$task <- "other"
  expect_error(predict(fit, nd), "not in the fitted model: other")
})

test_that("predict in a fresh R session from the stored JSON only", {
  skip_if_no_hetmtl()
  df <- enc_data(); sim <- hmb_data()
  enc <- enc_fit(df); hmb <- hmb_fit(sim)
  dir <- tempfile(); dir.create(dir)
  saveRDS(list(enc = enc, hmb = hmb, df = df, bw = sim$data), file.path(dir, "fits.rds"))
  code <- sprintf(paste0("suppressMessages(library(hetmtl)); o <- readRDS('%s'); ",
                         "saveRDS(list(predict(o$enc, o$df), predict(o$hmb, o$bw)), '%s')"),
                  file.path(dir, "fits.rds"), file.path(dir, "pred.rds"))
  rscript <- file.path(R.home("bin"), "Rscript")
  out <- system2(rscript, c("-e", shQuote(code)), stdout = TRUE, stderr = TRUE,
                 env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  expect_true(file.exists(file.path(dir, "pred.rds")), info = paste(out, collapse = "\n"))
  pred <- readRDS(file.path(dir, "pred.rds"))
  expect_equal(pred[[1]], predict(enc, df), tolerance = 1e-12)
  expect_equal(pred[[2]], predict(hmb, sim$data), tolerance = 1e-12)
  # the fit is self-contained: its model is validated JSON with a checksum
  tampered <- enc
  tampered$model_json <- sub("\"y_mean\": ", "\"y_mean\": 1", enc$model_json, fixed = TRUE)
  expect_error(predict(tampered, df), "checksum mismatch")
})

# The same data as a Python BlockwiseData (for fits made directly in Python).
py_blockwise_data <- function(sim) {
  ri <- reticulate::import("hetmtl.rinterop")
  hd <- reticulate::import("hetmtl.data.blockwise", convert = FALSE)
  cols <- unlist(sim$blocks, use.names = FALSE)
  frame <- ri$`_blockwise_frame`(lapply(sim$data[cols], function(v) as.list(as.double(v))), as.list(sim$data$task),
                                  as.list(sim$data$y))
  hd$BlockwiseData$from_dataframe(frame, lapply(sim$blocks, as.list), ".task", ".y", anchor = "x0")
}

test_that("blockwise_baseline: STL on the same split equals Python's STL", {
  skip_if_no_hetmtl()
  sim <- hmb_data()
  g <- data.frame(width = 6L, depth = 2L)
  stl <- blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "stl", grid = g, max_epochs = 10L, seed = 2L)
  expect_s3_class(stl, "hetmtl_blockwise")
  expect_equal(stl$method, "stl")
  ri <- reticulate::import("hetmtl.rinterop")
  bw <- reticulate::import("hetmtl.blockwise", convert = FALSE)
  data <- py_blockwise_data(sim)
  py <- bw$STL(grid = list(list(width = 6L, depth = 2L)), max_epochs = 10L, random_state = 2L)$fit(
    data, bw$make_split(data, list(0.6, 0.2, 0.2), seed = 2L))
  expect_equal(stl$rmse$rmse_test, unlist(ri$plain(py$test_rmse_$to_numpy())), tolerance = 1e-10)
  expect_error(blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "nope"), "should be one of")
})

test_that("blockwise_baseline: MBI on the same split equals Python's MBI; network settings refused", {
  skip_if_no_hetmtl()
  sim <- hmb_data()
  msgs <- character()
  mbi <- withCallingHandlers(
    blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "mbi", seed = 2L, nlam = 6L),
    warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") })
  # R's NA (a signalling NaN) reaches Python as a quiet NaN: no numpy 'invalid value' warning
  expect_false(any(grepl("invalid value", msgs)))
  expect_equal(mbi$method, "mbi")
  ri <- reticulate::import("hetmtl.rinterop")
  bw <- reticulate::import("hetmtl.blockwise", convert = FALSE)
  data <- py_blockwise_data(sim)
  py <- suppressWarnings(bw$MBI(nlam = 6L, random_state = 2L)$fit(data, bw$make_split(data, list(0.6, 0.2, 0.2), seed = 2L)))
  expect_equal(mbi$rmse$rmse_test, unlist(ri$plain(py$test_rmse_$to_numpy())), tolerance = 1e-10)
  expect_true(all(is.finite(mbi$rmse$rmse_train)) && all(mbi$rmse$n_test > 0))
  expect_error(blockwise_baseline(sim$data, "y", "task", sim$blocks, method = "mbi", grid = "small"),
               "no network settings; remove grid")
})
