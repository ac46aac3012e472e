"""The shared parameter-validation layer (hetmtl._validation) and the exception hierarchy."""
import os

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from hetmtl import _validation as v
from hetmtl.exceptions import (DataValidationError, HetmtlError, InputError, NotFittedError, ParameterError,
                               SummaryValidationError, TrainingError)


def test_hierarchy_keeps_builtin_types():
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, TypeError)
    assert issubclass(DataValidationError, InputError) and issubclass(SummaryValidationError, InputError)
    assert issubclass(NotFittedError, SklearnNotFittedError) and issubclass(NotFittedError, HetmtlError)
    assert issubclass(TrainingError, RuntimeError) and not issubclass(TrainingError, InputError)


@pytest.mark.parametrize("value", [2.5, True, "3", float("nan"), np.inf, None, 1 + 0j])
def test_check_int_refuses(value):
    with pytest.raises(ParameterError, match="n_folds"):
        v.check_int(value, "n_folds", low=2)


def test_check_int_accepts_integral_and_caps():
    assert v.check_int(5.0, "k") == 5 and type(v.check_int(np.int64(3), "k")) is int
    with pytest.raises(ParameterError, match="<= 2147483647"):
        v.check_int(10**12, "max_iter")
    with pytest.raises(ParameterError, match=">= 2"):
        v.check_int(1, "n_folds", low=2)


def test_check_float_and_level():
    assert v.check_float(np.inf, "C", low=0, allow_inf=True) == np.inf
    for bad in (np.nan, np.inf, "0.1", True):
        with pytest.raises(ParameterError, match="lr"):
            v.check_float(bad, "lr", low=0, low_open=True)
    with pytest.raises(ParameterError, match="> 0"):
        v.check_float(0.0, "lr", low=0, low_open=True)
    with pytest.raises(ParameterError, match="did you mean 0.95"):
        v.check_level(95)
    assert v.check_level(0.9) == 0.9


def test_choice_and_hidden():
    assert v.check_choice("min", "rule", ("min", "1se")) == "min"
    with pytest.raises(ParameterError, match=r"rule must be one of \['min', '1se'\]"):
        v.check_choice("MIN", "rule", ("min", "1se"))
    assert v.check_hidden((32, 16.0)) == (32, 16) and v.check_hidden(()) == () and v.check_hidden(8) == (8,)
    with pytest.raises(ParameterError, match="hidden"):
        v.check_hidden("32")
    with pytest.raises(ParameterError, match=r"hidden\[1\]"):
        v.check_hidden((4, 0))


def test_n_jobs_joblib_semantics():
    cores = os.cpu_count() or 1
    assert v.check_n_jobs(None) == 1 and v.check_n_jobs(-1) == cores and v.check_n_jobs(3) == 3
    assert v.check_n_jobs(-2) == max(cores - 1, 0) or cores == 1
    with pytest.raises(ParameterError):
        v.check_n_jobs(0)
    with pytest.raises(ParameterError, match="leaves no worker"):
        v.check_n_jobs(-(cores + 1))


def test_random_state_meaning():
    a = v.check_random_state(7).normal(size=3)
    assert np.array_equal(a, v.check_random_state(7).normal(size=3))
    assert not np.array_equal(v.check_random_state(None).normal(size=3), v.check_random_state(None).normal(size=3))
    g = np.random.default_rng(1)
    assert v.check_random_state(g) is g and v.seed_from(11) == 11
    for bad in (-1, "seed", 2.5, 2**33):
        with pytest.raises(ParameterError, match="random_state"):
            v.check_random_state(bad)


def test_check_array_refuses_complex_dates_text_nan():
    with pytest.raises(DataValidationError, match="complex"):
        v.check_array(np.ones((3, 2)) * (1 + 1j), "X")
    with pytest.raises(DataValidationError, match="dates"):
        v.check_array(np.array(["2020-01-01"], dtype="datetime64[D]").reshape(1, 1), "X")
    with pytest.raises(DataValidationError, match="not real numbers"):
        v.check_array([["a", "b"]], "X")
    with pytest.raises(DataValidationError, match=r"X \(task 2\) contains non-finite .* index \(1, 0\)"):
        v.check_array([[1.0, 2.0], [np.nan, 1.0]], "X", where="task 2")
    with pytest.raises(DataValidationError, match="0 rows"):
        v.check_array(np.empty((0, 2)), "X")
    assert v.check_array([[1, np.nan]], "X", allow_nan=True).shape == (1, 2)


def test_check_is_fitted():
    class Est:
        pass

    e = Est()
    with pytest.raises(NotFittedError, match="This Est instance is not fitted yet"):
        v.check_is_fitted(e, "coef_")
    e.coef_ = 1
    v.check_is_fitted(e, ["coef_"])


def test_progress_silent_and_verbose(capsys):
    from hetmtl._progress import check_verbose, progress

    assert list(progress(range(3), "fit", verbose=0)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), "fit sites", verbose=1)) == [0, 1, 2]
    assert "fit sites" in capsys.readouterr().err
    with pytest.raises(ParameterError, match="verbose"):
        check_verbose(-1)


def test_n_jobs_capped_per_core():
    cores = os.cpu_count() or 1
    assert v.check_n_jobs(v.MAX_JOBS_PER_CORE * cores) == v.MAX_JOBS_PER_CORE * cores
    with pytest.raises(ParameterError, match="workers per core"):
        v.check_n_jobs(10_000 * cores)
