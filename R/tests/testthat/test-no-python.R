test_that("a clear error when the Python package is missing", {
  skip_if(hetmtl_available(), "hetmtl is available; the missing-package path is tested in a subprocess")
  expect_error(site_dml(y ~ x, data.frame(y = 1, x = 1, d = 0, s = "a"), "d", "s"), "Python package 'hetmtl' is not available")
})

test_that("the missing-package message names the fix (subprocess without hetmtl)", {
  rscript <- file.path(R.home("bin"), "Rscript")
  code <- "library(hetmtl); tryCatch(site_dml(y ~ x, data.frame(y=1,x=1,d=0,s='a'), 'd', 's'), error = function(e) cat(conditionMessage(e)))"
  py <- Sys.which("python3")
  skip_if(py == "", "no system python3")
  # the base interpreter (outside any virtualenv; reticulate may have put the venv first on PATH)
  py <- system2(py, c("-c", shQuote("import os, sys; print(os.path.join(sys.base_prefix, 'bin', 'python3'))")), stdout = TRUE)
  skip_if(system2(py, c("-c", shQuote("import hetmtl")), stderr = FALSE, env = "PYTHONPATH=") == 0,
          "system python3 has hetmtl")
  # a Python without hetmtl: the system interpreter with the user site disabled
  out <- system2(rscript, c("-e", shQuote(code)), stdout = TRUE, stderr = TRUE,
                 env = c(paste0("RETICULATE_PYTHON=", py), "PYTHONNOUSERSITE=1", "PYTHONPATH="))
  expect_match(paste(out, collapse = "\n"), "Python package 'hetmtl' is not available")
})
