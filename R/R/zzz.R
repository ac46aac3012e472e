# Lazy import of the Python package: loading hetmtl in R never starts Python.
hetmtl_py <- NULL

.onLoad <- function(libname, pkgname) {
  hetmtl_py <<- reticulate::import("hetmtl", delay_load = TRUE)
}

#' @noRd
py_hetmtl <- function() {
  if (!hetmtl_available()) {
    hetmtl_abort(paste0(
      "The Python package 'hetmtl' is not available to reticulate.\n",
      "Point RETICULATE_PYTHON at a Python that has it (e.g. the project's .venv/bin/python), ",
      "or run install_hetmtl()."
    ), "hetmtl")
  }
  hetmtl_py
}

hetmtl_available <- function() {
  ok <- tryCatch(reticulate::py_module_available("hetmtl"), error = function(e) FALSE)
  isTRUE(ok)
}

install_hetmtl <- function(envname = "r-hetmtl", path = NULL, ...) {
  if (is.null(path)) {
    input_error("install_hetmtl() needs 'path': the hetmtl source directory (or a wheel file).")
  }
  if (!reticulate::virtualenv_exists(envname)) reticulate::virtualenv_create(envname)
  reticulate::virtualenv_install(envname, c("torch==2.13.0", normalizePath(path)), ...)
  message("Installed into virtualenv '", envname, "'. Use reticulate::use_virtualenv('", envname, "') before calling hetmtl.")
  invisible(envname)
}
