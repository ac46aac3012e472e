# Careful R -> Python conversion: doubles only, NA refused by name, factors expanded explicitly.

check_no_na <- function(df, what) {
  for (col in names(df)) {
    bad <- which(is.na(df[[col]]))
    if (length(bad) > 0) {
      input_error(sprintf("%s column '%s' has %d missing value(s) (rows %s); remove or impute them first",
                   what, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")))
    }
  }
  invisible(TRUE)
}

as_double_vector <- function(x, name) {
  if (anyNA(x)) {
    bad <- which(is.na(x))
    input_error(sprintf("column '%s' has %d missing value(s) (rows %s)", name, length(bad),
                 paste(utils::head(bad, 5), collapse = ", ")))
  }
  if (!is.numeric(x) && !is.logical(x)) input_error(sprintf("column '%s' must be numeric", name))
  as.double(x)
}

# Data go to Python as plain lists (column-major for matrices): no NumPy C-API on the R side,
# which Debian's reticulate 1.28 cannot use with NumPy 2.
as_py_list <- function(x) as.list(as.double(x))

rinterop <- function() {
  py_hetmtl()
  reticulate::import("hetmtl.rinterop")
}
