"""Nuisance learners by name, the same in Python and R.

:class:`~hetmtl.latefusion.MultiSiteDML` and :class:`~hetmtl.latefusion.SiteDML` take any
scikit-learn regressor (``ml_outcome``) and regressor or classifier (``ml_treatment``). This
module maps a short documented name to such a learner, so that R users (``site_dml(...,
ml_outcome = "forest")``) and Python users choose from the same set:

========== ==================================================== =========================================
name       regressor (outcome, continuous treatment)            classifier (binary treatment: propensity)
========== ==================================================== =========================================
default    the package's ridge sieve (``None``: SiteDML's own)  the ridge-logistic sieve (``None``)
forest     random forest (100 trees, min_samples_leaf=5)        probability forest (the same settings)
lasso      standardised ``LassoCV`` (5 folds)                   standardised L1 ``LogisticRegressionCV``
ridge      standardised ``RidgeCV`` (13 penalties, 1e-3..1e3)   standardised L2 ``LogisticRegressionCV``
boosting   ``HistGradientBoostingRegressor``                    ``HistGradientBoostingClassifier``
logistic   (refused: not a regressor)                           standardised unpenalised-ish logistic
========== ==================================================== =========================================

``"default"`` resolves to ``None``, which lets the estimator build its own default (the ridge
sieves with the penalty rule of its model). Any object with ``fit`` and ``predict`` (classifiers:
``predict_proba``) passes through unchanged.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sklearn.base import is_classifier, is_regressor

from hetmtl.exceptions import ParameterError

__all__ = ["LEARNER_NAMES", "describe_learners", "make_learner", "resolve_learner"]

KINDS = ("regressor", "classifier")


def _forest(kind: str, random_state: int | None) -> Any:
    from hetmtl.latefusion.dml import forest_classifier, forest_regressor

    return forest_regressor(random_state) if kind == "regressor" else forest_classifier(random_state)


def _scaled(model: Any) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def _lasso(kind: str, random_state: int | None) -> Any:
    from sklearn.linear_model import LassoCV, LogisticRegressionCV

    if kind == "regressor":
        return _scaled(LassoCV(cv=5, random_state=random_state, max_iter=5000))
    return _scaled(LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(1.0,), solver="saga", max_iter=5000,
                                        scoring="neg_log_loss", random_state=random_state,
                                        use_legacy_attributes=False))


def _ridge(kind: str, random_state: int | None) -> Any:
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV

    if kind == "regressor":
        return _scaled(RidgeCV(alphas=np.logspace(-3, 3, 13)))
    return _scaled(LogisticRegressionCV(Cs=10, cv=5, l1_ratios=(0.0,), max_iter=2000, scoring="neg_log_loss",
                                        random_state=random_state, use_legacy_attributes=False))


def _boosting(kind: str, random_state: int | None) -> Any:
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )

    cls = HistGradientBoostingRegressor if kind == "regressor" else HistGradientBoostingClassifier
    return cls(max_iter=200, learning_rate=0.05, min_samples_leaf=10, random_state=random_state)


def _logistic(kind: str, random_state: int | None) -> Any:
    from sklearn.linear_model import LogisticRegression

    if kind == "regressor":
        raise ParameterError("learner 'logistic' is a classifier; for an outcome regression use 'default', 'ridge', "
                             "'lasso', 'forest' or 'boosting'")
    return _scaled(LogisticRegression(C=1e4, max_iter=2000))


_MAKERS: dict[str, Callable[[str, int | None], Any]] = {
    "forest": _forest, "lasso": _lasso, "ridge": _ridge, "boosting": _boosting, "logistic": _logistic,
}
#: Every accepted learner name.
LEARNER_NAMES: tuple[str, ...] = ("default", *_MAKERS)

_DESCRIPTIONS = {
    "default": ("ridge sieve (splines + pairwise products, penalty by leave-one-out error)",
                "ridge-logistic sieve (penalty by approximate leave-one-out log-loss)"),
    "forest": ("random forest, 100 trees, min_samples_leaf=5, max_features=0.5", "probability forest, same settings"),
    "lasso": ("standardised LassoCV, 5 folds", "standardised L1 logistic regression, C by 5-fold CV log-loss"),
    "ridge": ("standardised RidgeCV, alphas 1e-3..1e3", "standardised L2 logistic regression, C by 5-fold CV log-loss"),
    "boosting": ("histogram gradient boosting, 200 iterations, learning rate 0.05",
                 "histogram gradient boosting classifier, same settings"),
    "logistic": ("(not a regressor)", "standardised logistic regression, C=1e4 (almost unpenalised)"),
}


def describe_learners() -> dict[str, dict[str, str]]:
    """The learner names with what each builds.

    Returns
    -------
    dict
        ``{name: {"regressor": text, "classifier": text}}`` in :data:`LEARNER_NAMES` order.
    """
    return {name: dict(zip(KINDS, _DESCRIPTIONS[name])) for name in LEARNER_NAMES}


def make_learner(name: str, kind: str = "regressor", random_state: int | None = None) -> Any:
    """A fresh scikit-learn learner for a name of :data:`LEARNER_NAMES`.

    Parameters
    ----------
    name : str
        One of :data:`LEARNER_NAMES` (case-insensitive).
    kind : {"regressor", "classifier"}
        Regression (outcome, continuous treatment) or classification (binary treatment).
    random_state : int or None
        Seed of randomised learners (forest, boosting, the CV splits of lasso/ridge logistic).

    Returns
    -------
    estimator or None
        ``None`` for ``"default"`` (the estimator's own default learner).

    Raises
    ------
    ParameterError
        Unknown name or kind, or a classifier-only name asked for as a regressor.
    """
    if kind not in KINDS:
        raise ParameterError(f"kind must be 'regressor' or 'classifier', got {kind!r}")
    if not isinstance(name, str):
        raise ParameterError(f"learner name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "default":
        return None
    if key not in _MAKERS:
        raise ParameterError(f"unknown learner {name!r}; the names are {', '.join(LEARNER_NAMES)}, "
                             "or pass a scikit-learn estimator")
    return _MAKERS[key](kind, random_state)


def resolve_learner(spec: Any, kind: str, random_state: int | None = None, name: str = "learner") -> Any:
    """A learner from a name, ``None`` or an estimator object (returned unchanged).

    Parameters
    ----------
    spec : str, estimator or None
        A name of :data:`LEARNER_NAMES`, an object with ``fit`` and ``predict``, or None (default).
    kind : {"regressor", "classifier"}
        What the slot needs; an object of the other kind is refused.
    random_state : int or None
        Passed to :func:`make_learner`.
    name : str
        The parameter name used in error messages (e.g. ``"ml_outcome"``).

    Returns
    -------
    estimator or None
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            return make_learner(spec, kind, random_state)
        except ParameterError as exc:
            raise ParameterError(f"{name}: {exc}") from None
    if not (hasattr(spec, "fit") and hasattr(spec, "predict")):
        raise ParameterError(f"{name} must be a learner name ({', '.join(LEARNER_NAMES)}) or an estimator with "
                             f"fit and predict, got {type(spec).__name__}")
    if kind == "regressor" and is_classifier(spec):
        raise ParameterError(f"{name} must be a regressor, got the classifier {type(spec).__name__}")
    if kind == "classifier" and is_regressor(spec):
        raise ParameterError(f"{name} must be a classifier here (the treatment is binary: propensity scores), got the "
                             f"regressor {type(spec).__name__}")
    return spec
