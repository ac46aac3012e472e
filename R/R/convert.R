# Careful R -> Python conversion: doubles only, NA refused by name, factors expanded explicitly.

check_no_na <- function(df, what) {
  for (col in names(df)) {
    bad <- which(is.na(df[[col]]))
    if (length(bad) > 0) {
      stop(sprintf("%s column '%s' has %d missing value(s) (rows %s); remove or impute them first",
                   what, col, length(bad), paste(utils::head(bad, 5), collapse = ", ")), call. = FALSE)
    }
  }
  invisible(TRUE)
}

# Numeric design matrix from a one-sided formula; factors become treatment-contrast dummies.
design_matrix <- function(rhs, data, what) {
  vars <- all.vars(rhs)
  missing <- setdiff(vars, names(data))
  if (length(missing)) stop(sprintf("%s column(s) not in data: %s", what, paste(missing, collapse = ", ")), call. = FALSE)
  check_no_na(data[vars], what)
  mf <- stats::model.frame(rhs, data, na.action = stats::na.fail)
  mm <- stats::model.matrix(rhs, mf)
  mm <- mm[, colnames(mm) != "(Intercept)", drop = FALSE]
  storage.mode(mm) <- "double"
  mm
}

# Binary treatment from numeric 0/1, logical, or a two-level factor (second level = treated).
as_treatment <- function(x, name) {
  if (anyNA(x)) stop(sprintf("treatment column '%s' has missing values", name), call. = FALSE)
  if (is.logical(x)) return(as.double(x))
  if (is.factor(x) || is.character(x)) {
    f <- factor(x)
    if (nlevels(f) != 2) stop(sprintf("treatment column '%s' must have exactly 2 levels, has %d", name, nlevels(f)), call. = FALSE)
    return(as.double(f == levels(f)[2]))
  }
  as.double(x)
}

as_double_vector <- function(x, name) {
  if (anyNA(x)) {
    bad <- which(is.na(x))
    stop(sprintf("column '%s' has %d missing value(s) (rows %s)", name, length(bad),
                 paste(utils::head(bad, 5), collapse = ", ")), call. = FALSE)
  }
  if (!is.numeric(x) && !is.logical(x)) stop(sprintf("column '%s' must be numeric", name), call. = FALSE)
  as.double(x)
}

# Data go to Python as plain lists (column-major for matrices): no NumPy C-API on the R side,
# which Debian's reticulate 1.28 cannot use with NumPy 2.
as_py_list <- function(x) as.list(as.double(x))

rinterop <- function() {
  py_hetmtl()
  reticulate::import("hetmtl.rinterop")
}
