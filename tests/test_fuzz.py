"""Hypothesis fuzz suite over the public entry points (issue #25).

For every entry point (data containers, per-site DML, late fusion, summary JSON readers, model
exports, MBI, the block-wise and dual-encoder estimators with tiny epochs, the command line and
the study runner) hostile parameters and data (NaN, inf, 0, negative, 2.5, strings, huge ints,
empty lists, complex arrays, datetime columns, duplicate names, 0 rows, forged files) must end in
one of two outcomes:

- a clean error: a documented hetmtl exception (:class:`~hetmtl.exceptions.HetmtlError` and its
  subclasses, :class:`~hetmtl.exceptions.NotFittedError`) with a message; for the CLI, exit code
  1 or 2 with one line on stderr and no traceback;
- a finite result: a fitted model whose coefficients, standard errors and predictions are finite
  and which did train (a selected epoch with a finite validation loss).

Anything else (a raw numpy/pandas/scikit-learn/torch/pybind11 exception, KeyError,
ZeroDivisionError, AttributeError, silent NaN/inf, an untrained model, a CLI traceback or
internal error) fails the test.

Profiles: the default ``ci`` profile runs few, derandomised examples per entry point (a few
minutes at most); ``HETMTL_FUZZ_PROFILE=long`` multiplies them by ``HETMTL_FUZZ_SCALE`` (default
10) with fresh randomness (``benchmarks/bench_fuzz.py``). With ``HETMTL_FUZZ_RECORD=path.json``
the outcomes are counted per component and written there instead of failing at the first bad
case (the benchmark's outcome table).
"""
from __future__ import annotations

import collections
import json
import math
import os
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hetmtl.exceptions import HetmtlError

PROFILE = os.environ.get("HETMTL_FUZZ_PROFILE", "ci")
SCALE = 1 if PROFILE == "ci" else int(os.environ.get("HETMTL_FUZZ_SCALE", "10"))
RECORD = os.environ.get("HETMTL_FUZZ_RECORD")
OUTCOMES: collections.Counter = collections.Counter()
DETAILS: dict[str, list[str]] = collections.defaultdict(list)
CLEAN, FINITE, OTHER = "clean error", "finite result", "anything else"


# two registered profiles: "hetmtl-fuzz-ci" (derandomised: the same cases on every CI run) and
# "hetmtl-fuzz-long" (fresh randomness); each test scales the profile's examples to its cost
_PHASES = [Phase.explicit, Phase.generate] if RECORD else [Phase.explicit, Phase.generate, Phase.shrink]
settings.register_profile("hetmtl-fuzz-ci", max_examples=10, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck), phases=_PHASES)
settings.register_profile("hetmtl-fuzz-long", max_examples=10 * SCALE, deadline=None, derandomize=False,
                          database=None, suppress_health_check=list(HealthCheck), phases=_PHASES)
_PROFILE = settings.get_profile("hetmtl-fuzz-ci" if PROFILE == "ci" else "hetmtl-fuzz-long")


CI_EXAMPLES = 2  # examples per unit of ``fuzz(n)`` in CI: about a minute for the whole suite


def fuzz(n: int):
    """Hypothesis settings of one entry point: ``CI_EXAMPLES * n`` examples in CI (times SCALE in
    the long run)."""
    return settings(_PROFILE, max_examples=CI_EXAMPLES * n * SCALE)


@pytest.fixture(autouse=True)
def _dump_outcomes():
    """With HETMTL_FUZZ_RECORD: merge this test's counts into the file (after every test, so a
    crash loses one test's counts only)."""
    yield
    if RECORD:
        path = Path(RECORD)
        old = json.loads(path.read_text()) if path.exists() else {"counts": {}, "details": {}}
        for (component, outcome), k in OUTCOMES.items():
            old["counts"].setdefault(component, {}).setdefault(outcome, 0)
            old["counts"][component][outcome] += k
        for component, lines in DETAILS.items():
            old["details"].setdefault(component, []).extend(lines)
        path.write_text(json.dumps(old, indent=1))
        OUTCOMES.clear()
        DETAILS.clear()


class Bad(Exception):
    """A result that is neither finite nor trained."""


class WorkerBomb(Exception):
    """joblib was asked for more worker processes than the machine can hold (not a hetmtl error)."""


MAX_WORKERS = 8


@pytest.fixture(autouse=True)
def _no_worker_bomb(monkeypatch):
    """Refuse joblib pools larger than MAX_WORKERS before a process starts: an unchecked
    ``n_jobs=10**6`` would start a million processes (this machine, or CI). The refusal is a
    :class:`WorkerBomb`, so the case counts as "anything else" and names the estimator at fault."""
    import joblib

    original = joblib.Parallel.__init__

    def guarded(self, n_jobs=None, *args, **kwargs):
        if isinstance(n_jobs, (int, np.integer)) and not isinstance(n_jobs, bool) and n_jobs > MAX_WORKERS:
            raise WorkerBomb(f"joblib.Parallel(n_jobs={n_jobs}) would start {n_jobs} worker processes")
        original(self, n_jobs, *args, **kwargs)

    monkeypatch.setattr(joblib.Parallel, "__init__", guarded)


def _origin(exc: BaseException) -> str:
    """The innermost hetmtl source line of a traceback (who should have caught it)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}hetmtl{os.sep}" in f.filename
              and "test_fuzz" not in f.filename]
    if not frames:
        return "outside hetmtl"
    f = frames[-1]
    return f"{f.filename.split(os.sep + 'hetmtl' + os.sep, 1)[-1]}:{f.lineno}"


def record(component: str, outcome: str, detail: str | None = None) -> None:
    OUTCOMES[(component, outcome)] += 1
    if outcome == OTHER:
        DETAILS[component].append(detail or "?")
        if not RECORD:
            pytest.fail(f"{component}: {detail}", pytrace=False)


def outcome(component: str, thunk, check=None, case: str = "") -> None:
    """Run ``thunk`` and classify what happens (see the module docstring)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = thunk()
    except HetmtlError as exc:
        if str(exc).strip():
            record(component, CLEAN)
        else:
            record(component, OTHER, f"{type(exc).__name__} without a message [{case}]")
        return
    except Exception as exc:  # noqa: BLE001 - what we are looking for
        record(component, OTHER, f"{type(exc).__module__}.{type(exc).__name__}: {' '.join(str(exc).split())[:160]} "
                                 f"(at {_origin(exc)}) [{case}]")
        return
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if check is not None:
                check(result)
    except Bad as exc:
        record(component, OTHER, f"{exc} [{case}]")
        return
    except Exception as exc:  # noqa: BLE001 - the fitted object misbehaves
        record(component, OTHER, f"after fit: {type(exc).__name__}: {' '.join(str(exc).split())[:160]} "
                                 f"(at {_origin(exc)}) [{case}]")
        return
    record(component, FINITE)


def finite(name: str, *values) -> None:
    for v in values:
        a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if a.dtype == object:
            a = a.astype(float)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise Bad(f"non-finite {name}")


def _grid_fits(est) -> list:
    fits = []
    for attr in ("fit_", "fits_"):
        v = getattr(est, attr, None)
        if v is None:
            continue
        fits += list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, (list, tuple)) else [v]
    imp = getattr(est, "imputer_", None)
    if imp is not None and imp is not est:
        fits += _grid_fits(imp)
    return [f for f in fits if hasattr(f, "val_loss") and hasattr(f, "best_epoch")]


def trained(est) -> None:
    """A neural model that trained: its selected configuration has a finite validation loss at
    an epoch >= 0 (not the untrained starting point)."""
    for g in _grid_fits(est):
        sel = g.selected
        if not np.isfinite(np.asarray(g.val_loss, float)[sel]) or np.asarray(g.best_epoch)[sel] < 0:
            raise Bad(f"untrained model (val_loss={np.asarray(g.val_loss)[sel]}, best_epoch={np.asarray(g.best_epoch)[sel]})")
    best = getattr(est, "best_epoch_", None)
    if best is not None and np.any(np.asarray(best) < 0):
        raise Bad(f"untrained model (best_epoch_={best})")


# ----------------------------------------------------------------------------- hostile values
NAN, INF = float("nan"), float("inf")
HOSTILE = [NAN, INF, -INF, 0, 0.0, -1, -0.5, 2.5, 1e-300, 1e308, 10**12, 2**63, 10**400, "3", "abc", "", None, True,
           False, [], [1, 2], {}, complex(1, 1), np.float64(NAN), np.int64(-5), "nan", (), [[1]], -(2**31)]
EDGE = [1, 2, 3, 0.5, 0.99, 1e-8, 1e-3, 100, 1e6, 1e100, "auto", "none"]  # odd but possibly valid
hostile = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(EDGE), st.integers(-(10**20), 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))


COSTLY = {"max_epochs", "hbi_max_epochs", "patience", "n_rep", "n_boot", "nlam", "max_iter", "n_folds", "prox_steps",
          "specific_epochs", "lr_step", "batch_size", "n_reps", "tuning_folds"}


def _affordable(params: dict) -> dict:
    """Valid but expensive counts (e.g. max_epochs=10**6) are cut to 50: what is tested is the
    refusal of bad values, not a long fit; values of 2**31 and more still go through."""
    return {k: (50 if k in COSTLY and isinstance(v, (int, float)) and not isinstance(v, bool)
                and 50 < v < 2**31 and math.isfinite(v) else v) for k, v in params.items()}


def override(params: list[str]):
    """One or two hostile parameter values."""
    return st.dictionaries(st.sampled_from(params), hostile, min_size=1, max_size=2).map(_affordable)


DATA_MUTATIONS = ["none", "nan_X", "inf_y", "zero_rows", "one_row", "complex_X", "huge", "constant_d", "string_X",
                  "3d_X", "short_y", "all_treated", "tiny_values", "bool_X", "object_X"]


def mutate(X: np.ndarray, y: np.ndarray, d: np.ndarray | None, how: str):
    X, y = X.copy(), y.copy()
    d = None if d is None else d.copy()
    if how == "nan_X":
        X[0, 0] = NAN
    elif how == "inf_y":
        y[1] = INF
    elif how == "zero_rows":
        X, y, d = X[:0], y[:0], None if d is None else d[:0]
    elif how == "one_row":
        X, y, d = X[:1], y[:1], None if d is None else d[:1]
    elif how == "complex_X":
        X = X + 1j
    elif how == "huge":
        y = y * 1e154
        X = X * 1e154
    elif how == "constant_d" and d is not None:
        d[:] = 1.0
    elif how == "string_X":
        X = X.astype(str)
    elif how == "3d_X":
        X = X[:, :, None]
    elif how == "short_y":
        y = y[:-3]
    elif how == "all_treated" and d is not None:
        d[:] = 1.0
        d[0] = 0.0
    elif how == "tiny_values":
        X, y = X * 1e-300, y * 1e-300
    elif how == "bool_X":
        X = X > 0
    elif how == "object_X":
        X = X.astype(object)
        X[0, 0] = "x"
    return X, y, d


def site_arrays(seed: int, n: int = 60, p: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    d = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    y = d * (1 + 0.5 * X[:, 1]) + X @ np.linspace(1, 0.2, p) + rng.normal(size=n)
    return X, y, d


# ----------------------------------------------------------------------------- containers
@fuzz(50)
@given(how=st.sampled_from(DATA_MUTATIONS + ["datetime_col", "dup_names", "mixed_sites", "nan_site", "text_d"]),
       seed=st.integers(0, 3))
def test_fuzz_containers(how, seed):
    from hetmtl.data import MultiSiteData, MultiTaskData

    X, y, d = site_arrays(seed, n=40)
    site = np.repeat(["a", "b"], 20).astype(object)

    def multisite():
        if how in ("datetime_col", "dup_names", "mixed_sites", "nan_site", "text_d"):
            df = pd.DataFrame(X, columns=["x0", "x1", "x2"]).assign(y=y, d=d, site=site)
            if how == "datetime_col":
                df["x1"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(40), unit="D")
            elif how == "dup_names":
                return MultiSiteData.from_dataframe(df, "y", "d", "site", x_cols=["x0", "x0"], z_cols=["x1", "x1"])
            elif how == "mixed_sites":
                df["site"] = [1] * 20 + ["1"] * 20
            elif how == "nan_site":
                df.loc[3, "site"] = None
            elif how == "text_d":
                df["d"] = np.where(d > 0, "active", "placebo")
            return MultiSiteData.from_dataframe(df, "y", "d", "site", z_cols=["x2"])
        Xm, ym, dm = mutate(X, y, d, how)
        n = min(len(ym), len(Xm))
        return MultiSiteData(ym, dm, Xm, site[:n] if len(Xm) == len(ym) else site)

    def check_multisite(data):
        finite("data", data.y, data.d, data.X)
        if len(set(map(str, data.sites))) != len(data.sites):
            raise Bad(f"site labels that print alike: {data.sites}")

    outcome("containers", multisite, check_multisite, f"MultiSiteData {how}")

    def multitask():
        Xm, ym, _ = mutate(X, y, None, how)
        return MultiTaskData([Xm, X], [ym, y], tasks=["t1", "t2"])

    outcome("containers", multitask, lambda data: finite("data", *[t.X for t in data], *[t.y for t in data]),
            f"MultiTaskData {how}")


# ----------------------------------------------------------------------------- DML
SITE_DML_PARAMS = ["model", "n_folds", "n_rep", "clip", "basis_center", "basis_scale", "tuning_folds", "df_correction",
                   "random_state", "verbose", "ml_outcome", "ml_treatment"]


@fuzz(40)
@given(params=st.one_of(st.just({}), override(SITE_DML_PARAMS)), how=st.sampled_from(DATA_MUTATIONS),
       model=st.sampled_from(["plr", "ate", "cate", "blp"]), seed=st.integers(0, 5))
def test_fuzz_site_dml(params, how, model, seed):
    from hetmtl.latefusion import SiteDML

    X, y, d = site_arrays(seed)
    Xm, ym, dm = mutate(X, y, d, how) if not params else (X, y, d)
    Z = X[:, :1] if model in ("cate", "blp") else None

    def run():
        return SiteDML(**{"model": model, "n_folds": 2, "n_rep": 1, "random_state": 0, **params}).fit(ym, dm, Xm, Z)

    def check(est):
        finite("coef/se", est.coef_, est.se_)
        finite("summary table", est.summary_frame().select_dtypes("number"))

    outcome("SiteDML", run, check, f"{params} {how} {model}")


@fuzz(20)
@given(params=st.one_of(st.just({}), override(SITE_DML_PARAMS[:-2] + ["n_jobs"])),
       folds=st.sampled_from([None, "self", "all", "short", "garbage"]), seed=st.integers(0, 3))
def test_fuzz_multisite_dml(params, folds, seed):
    from hetmtl.data import MultiSiteData
    from hetmtl.latefusion import MultiSiteDML, SiteDML

    X, y, d = site_arrays(seed, n=80)
    data = MultiSiteData(y, d, X, np.repeat(["a", "b"], 40))

    def run():
        if folds is None:
            allowed = set(__import__("inspect").signature(MultiSiteDML).parameters)
            kw = {k: v for k, v in params.items() if k in allowed}
            return MultiSiteDML(**{"n_folds": 2, "n_rep": 1, "random_state": 0, **kw}).fit(data)
        n = 40
        idx = np.arange(n)
        f = {"self": [[(idx, idx[:20]), (idx, idx[20:])]], "all": [[(idx, idx), (idx, idx)]],
             "short": np.zeros(n - 3, int), "garbage": "abc"}[folds]
        return SiteDML(n_folds=2, n_rep=1, random_state=0).fit(y[:n], d[:n], X[:n], folds=f)

    def check(est):
        table = est.summary_frame() if hasattr(est, "summary_frame") else None
        finite("coef/se", est.coef_ if hasattr(est, "coef_") else table.select_dtypes("number"),
               getattr(est, "se_", 0.0))

    outcome("MultiSiteDML", run, check, f"{params} folds={folds}")


# ----------------------------------------------------------------------------- late fusion
@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    from hetmtl.latefusion import SiteDML

    out = tmp_path_factory.mktemp("summaries")
    objs, paths = [], []
    for k in range(3):
        X, y, d = site_arrays(10 + k, n=80)
        s = SiteDML(model="plr", n_folds=2, n_rep=1, random_state=k).fit(y, d, X).to_summary(site=f"s{k}")
        objs.append(s)
        paths.append(out / f"s{k}.json")
        s.to_json(paths[-1])
    return objs, paths


FUSION_PARAMS = ["penalty", "loss_matrix", "metric", "C", "tau2", "lambdas", "C_grid", "cv_rule", "ci", "centre_ci",
                 "site_covariates", "kappa", "n_boot", "random_state", "tol", "max_iter", "n_jobs", "verbose"]


@fuzz(40)
@given(params=override(FUSION_PARAMS), level=st.sampled_from([0.95, 0.5, 95, 0, 1, NAN, "x"]))
def test_fuzz_late_fusion(summaries, params, level):
    from hetmtl.latefusion import LateFusion

    def run():
        est = LateFusion(**params).fit(summaries[0])
        return est, est.summary_frame(level)

    def check(res):
        est, table = res
        finite("fused estimates", est.coef_, table.select_dtypes("number"))

    outcome("LateFusion", run, check, f"{params} level={level!r}")


@fuzz(30)
@given(estimate=st.lists(hostile, min_size=0, max_size=4), se=st.lists(hostile, min_size=0, max_size=4),
       n=st.one_of(st.none(), st.lists(hostile, min_size=0, max_size=4)))
def test_fuzz_published_estimates(estimate, se, n):
    from hetmtl.latefusion import LateFusion

    def run():
        k = max(len(estimate), len(se), 1)
        frame = pd.DataFrame({"site": [f"s{i}" for i in range(k)],
                              "estimate": (list(estimate) + [0.1] * k)[:k], "se": (list(se) + [0.2] * k)[:k]})
        if n is not None:
            frame["n"] = (list(n) + [100] * k)[:k]
        return LateFusion(penalty="group").fit(frame)

    outcome("LateFusion", run, lambda est: finite("fused estimates", est.coef_), f"estimates {estimate} {se} {n}")


@fuzz(20)
@given(theta=st.lists(hostile, min_size=0, max_size=4), se=st.lists(hostile, min_size=0, max_size=4),
       tau2=st.one_of(st.sampled_from(["reml", "dl", "pm", "ml", "hs", "sj", "bogus"]), hostile),
       level=st.sampled_from([0.95, 0.5, 95, 0, NAN]), test=st.sampled_from(["z", "knha", "t", 1]))
def test_fuzz_random_effects(theta, se, tau2, level, test):
    from hetmtl.latefusion import random_effects

    def run():
        return random_effects(theta, se=se, tau2=tau2, level=level, test=test)

    def check(r):
        finite("random-effects estimates", r.mu if hasattr(r, "mu") else 0.0, r.tau2, r.ci, r.blup)

    outcome("LateFusion", run, check, f"random_effects {theta} {se} {tau2!r} {level} {test}")


# ----------------------------------------------------------------------------- summary files
def _paths_in(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths_in(v, prefix + (k,))
    elif isinstance(obj, list) and obj:
        yield prefix + (0,)
        yield from _paths_in(obj[0], prefix + (0,))


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()
FILE_TRICKS = ["edit", "edit_resum", "delete_resum", "truncate", "nan_literal", "deep", "directory", "empty", "bom",
               "binary", "huge_int"]


def _hostile_file(text: str, trick: str, path_choice: int, value, tmp: Path, digest_fn) -> Path:
    obj = json.loads(text)
    paths = list(_paths_in(obj["payload"]))
    target = paths[path_choice % len(paths)]
    p = tmp / f"f{abs(hash((trick, path_choice, repr(value)))) % 10**8}.json"
    if trick in ("edit", "edit_resum", "delete_resum"):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        _set(obj["payload"], target, _DELETE if trick == "delete_resum" else value)
        if trick != "edit":
            obj["sha256"] = digest_fn(obj["payload"]) if _dumpable(obj["payload"]) else obj["sha256"]
        p.write_text(json.dumps(obj))
    elif trick == "truncate":
        p.write_text(text[: max(1, path_choice % len(text))])
    elif trick == "nan_literal":
        p.write_text(text.replace("[", "[NaN, ", 1))
    elif trick == "deep":
        p.write_text("[" * 50_000 + "]" * 50_000)
    elif trick == "directory":
        p.mkdir()
    elif trick == "empty":
        p.write_text("")
    elif trick == "bom":
        p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    elif trick == "binary":
        p.write_bytes(bytes(range(256)) * 4)
    elif trick == "huge_int":
        p.write_text(text.replace('"n_folds": 2', '"n_folds": ' + "9" * 5000, 1).replace('"version": 1', '"version": 1' + "0" * 5000, 1))
    return p


def _dumpable(obj) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


@fuzz(50)
@given(trick=st.sampled_from(FILE_TRICKS), path_choice=st.integers(0, 200), value=hostile)
def test_fuzz_summary_files(summaries, tmp_path_factory, trick, path_choice, value):
    from hetmtl._jsonio import canonical_digest
    from hetmtl.latefusion import LateFusion, SiteSummary, SummaryTable

    tmp = tmp_path_factory.mktemp("sf")
    good = summaries[1]
    path = _hostile_file(good[0].read_text(), trick, path_choice, value, tmp, canonical_digest)

    def check(s):
        finite("summary arrays", s.theta, s.J, s.Omega)

    outcome("summary JSON readers", lambda: SiteSummary.read_json(path), check, f"{trick} {path_choice} {value!r}")

    def table():
        t = SummaryTable.read_json([good[0], path])
        return LateFusion(penalty="group").fit(t)

    outcome("summary JSON readers", table, lambda est: finite("fused estimates", est.coef_),
            f"table {trick} {path_choice} {value!r}")


# ----------------------------------------------------------------------------- model exports
@pytest.fixture(scope="module")
def dual_export():
    pytest.importorskip("torch")
    from hetmtl.encoders import DualEncoderMTL, simulate_latent

    sim = simulate_latent(n_tasks=2, n=30, d=3, random_state=0)
    model = DualEncoderMTL(n_shared=2, n_specific=1, hidden=(4,), max_epochs=5, patience=5, random_state=0).fit(sim.data)
    X = sim.data[model.tasks_[0]].X
    return model.to_json(), X, model.tasks_[0], model


@fuzz(50)
@given(trick=st.sampled_from(FILE_TRICKS + ["edit_resum"] * 4), path_choice=st.integers(0, 400), value=hostile)
def test_fuzz_model_exports(dual_export, tmp_path_factory, trick, path_choice, value):
    from hetmtl._jsonio import canonical_digest
    from hetmtl.encoders import DualEncoderMTL

    text, X, task, _ = dual_export
    path = _hostile_file(text, trick, path_choice, value, tmp_path_factory.mktemp("mx"), canonical_digest)

    def run():
        m = DualEncoderMTL.from_json(path)
        return m, m.predict(X, task)

    outcome("model exports", run, lambda r: finite("predictions", r[1]), f"{trick} {path_choice} {value!r}")


@pytest.fixture(scope="module")
def hmb_export(blockwise_data):
    from hetmtl.blockwise import MTLHMB

    m = MTLHMB(grid=TINY_GRID, hbi_grid=TINY_HBI, max_epochs=4, hbi_max_epochs=3, patience=2, random_state=0)
    m.fit(blockwise_data)
    return m.to_json(), np.hstack([blockwise_data.x0(0), blockwise_data.x_private(0)]), m


@fuzz(20)
@given(trick=st.sampled_from(FILE_TRICKS + ["edit_resum"] * 4), path_choice=st.integers(0, 600), value=hostile)
def test_fuzz_mtlhmb_exports(hmb_export, tmp_path_factory, trick, path_choice, value):
    from hetmtl._jsonio import canonical_digest
    from hetmtl.blockwise import MTLHMB

    text, X, _ = hmb_export
    path = _hostile_file(text, trick, path_choice, value, tmp_path_factory.mktemp("hx"), canonical_digest)

    def run():
        m = MTLHMB.from_json(path)
        return m, m.predict(X, 0)

    outcome("model exports", run, lambda r: finite("predictions", r[1]), f"MTLHMB {trick} {path_choice} {value!r}")


# ----------------------------------------------------------------------------- MBI
MBI_PARAMS = ["engine", "nlam", "lambda_min_ratio", "lambdas", "a", "eps1", "eps3", "tol", "max_iter", "anchor",
              "random_state", "n_jobs"]


def mbi_data(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = X @ np.array([1.0, -0.5, 0, 0.8, 0, 0]) + 0.3 * rng.normal(size=n)
    X[: n // 3, 3:] = NAN  # the second source is missing for a third of the rows
    return X, y, [(0, 3), (3, 6)]


@fuzz(40)
@given(params=st.one_of(st.just({}), override(MBI_PARAMS)), how=st.sampled_from(DATA_MUTATIONS + ["bad_sources"]),
       seed=st.integers(0, 3))
def test_fuzz_mbi(params, how, seed):
    from hetmtl.blockwise import MBI

    X, y, sources = mbi_data(seed)
    if params:
        how = "none"
    Xm, ym, _ = mutate(np.nan_to_num(X, nan=0.0), y, None, how) if how not in ("none", "bad_sources") else (X, y, None)
    if how not in ("none", "bad_sources") and Xm.ndim == 2 and Xm.dtype.kind == "f" and Xm.shape[0] > 5:
        Xm = Xm.copy()
        Xm[: Xm.shape[0] // 3, 3:] = NAN
    src = [(0, 4), (3, 9)] if how == "bad_sources" else sources

    def run():
        est = MBI(**{"nlam": 10, **params}).fit(Xm, ym, src)
        Xc = np.nan_to_num(X[-5:], nan=0.0)
        return est, est.predict(Xc)

    def check(r):
        est, pred = r
        finite("coefficients / predictions", est.coef_, pred)
        if hasattr(est, "lambda_") and not np.isfinite(est.lambda_):
            raise Bad(f"selected lambda {est.lambda_}")

    outcome("MBI", run, check, f"{params} {how}")


# ----------------------------------------------------------------------------- block-wise estimators
@pytest.fixture(scope="module")
def blockwise_data():
    pytest.importorskip("torch")
    from hetmtl.blockwise import simulate_blockwise

    return simulate_blockwise(n=(40, 36), p0=4, p_private=(2, 3), seed=1).data


BLOCK_PARAMS = ["grid", "hbi_grid", "batch_size", "max_epochs", "patience", "lr", "lr_step", "lr_gamma",
                "hbi_max_epochs", "group_by", "dtype", "n_threads", "random_state", "selection", "verbose"]
TINY_GRID = [dict(width=4, depth=1, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.01)]
TINY_HBI = [dict(width=4, depth=1, lambda_orth=0.0)]
GRID_HOSTILE = st.sampled_from([[], [{}], [dict(width=0, depth=1)], [dict(width=4, depth=0)], [dict(width=-1, depth=2)],
                                [dict(width=2.5, depth=1)], [dict(width="8", depth=1)], [dict(width=4, depth=1, lambda_orth=NAN)],
                                [dict(width=4, depth=1, bogus=1)], "small", "nope", [dict(width=10**9, depth=1)]])


@fuzz(30)
@given(cls=st.sampled_from(["MTLHMB", "STL", "HTL", "HPS"]),
       params=st.one_of(st.just({}), override(BLOCK_PARAMS), st.fixed_dictionaries({"grid": GRID_HOSTILE})),
       seed=st.integers(0, 2))
def test_fuzz_blockwise_estimators(blockwise_data, cls, params, seed):
    import hetmtl.blockwise as bw

    est_cls = getattr(bw, cls)
    base = {"grid": TINY_GRID if cls in ("MTLHMB", "HTL") else [dict(width=4, depth=1)], "max_epochs": 4,
            "patience": 2, "random_state": seed}
    if cls != "HTL":
        base |= {"hbi_grid": TINY_HBI, "hbi_max_epochs": 3}
    if "grid" in params and isinstance(params["grid"], list) and cls in ("STL", "HPS"):
        params = {**params, "grid": [{k: v for k, v in g.items() if not k.startswith("lambda")} for g in params["grid"]]}
    allowed = set(__import__("inspect").signature(est_cls).parameters)
    params = {k: v for k, v in params.items() if k in allowed}

    def run():
        est = est_cls(**{**base, **params}).fit(blockwise_data)
        X = np.hstack([blockwise_data.x0(0), blockwise_data.x_private(0)])
        return est, est.predict(X, 0)

    def check(r):
        est, pred = r
        finite("predictions", pred)
        trained(est)

    outcome(f"block-wise ({cls})", run, check, f"{params}")


# ----------------------------------------------------------------------------- dual encoder
ENC_PARAMS = ["n_shared", "n_specific", "hidden", "hidden_specific", "linear", "lam_alpha", "lam_beta", "lam_orth",
              "penalty", "center", "center_alpha", "center_step", "task_weights", "lr", "weight_decay", "max_epochs",
              "patience", "batch_size", "prox_steps", "prox_backend", "normalize", "validation_fraction",
              "early_stopping", "training", "specific_epochs", "standardize", "fuse_tol", "random_state", "n_threads",
              "verbose"]


@fuzz(40)
@given(params=st.one_of(st.just({}), override(ENC_PARAMS), st.fixed_dictionaries({"hidden": st.sampled_from(["32", (0,), (2.5,), [],
                                                                                                 (10**9,), (-1,)])})),
       how=st.sampled_from(["none", "none", "huge", "nan_X", "zero_rows", "complex_X", "one_row"]), seed=st.integers(0, 2))
def test_fuzz_dual_encoder(params, how, seed):
    pytest.importorskip("torch")
    from hetmtl.data import MultiTaskData
    from hetmtl.encoders import DualEncoderMTL

    rng = np.random.default_rng(seed)
    Xs = [rng.normal(size=(24, 3)) for _ in range(2)]
    ys = [x @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.normal(size=24) for x in Xs]
    X0, y0, _ = mutate(Xs[0], ys[0], None, how)

    def run():
        data = MultiTaskData([X0, Xs[1]], [y0, ys[1]], tasks=["a", "b"])
        est = DualEncoderMTL(**{"n_shared": 2, "n_specific": 1, "hidden": (4,), "max_epochs": 4, "patience": 4,
                                "random_state": 0, **params}).fit(data)
        return est, est.predict(Xs[1], "b")

    def check(r):
        est, pred = r
        finite("predictions", pred)
        trained(est)

    outcome("dual encoder", run, check, f"{params} {how}")


# ----------------------------------------------------------------------------- fitted models, hostile calls
PREDICT_X = ["ok", "nan", "inf", "complex", "wrong_cols", "zero_rows", "strings", "1d", "3d", "list", "none", "huge"]


def _hostile_X(X: np.ndarray, how: str):
    return {"ok": X, "nan": np.where(np.arange(X.size).reshape(X.shape) == 0, NAN, X), "inf": X * INF,
            "complex": X + 1j, "wrong_cols": X[:, :-1], "zero_rows": X[:0], "strings": X.astype(str), "1d": X[0],
            "3d": X[None], "list": X.tolist(), "none": None, "huge": X * 1e300}[how]


@fuzz(40)
@given(model=st.sampled_from(["dual", "mtlhmb", "mbi", "sitedml", "unfitted"]), how=st.sampled_from(PREDICT_X),
       task=st.sampled_from([0, 1, -1, 5, "task1", "nope", None, 2.5, NAN]),
       method=st.sampled_from(["predict", "transform", "encodings", "summary", "confint", "to_json"]))
def test_fuzz_fitted_model_calls(dual_export, hmb_export, model, how, task, method):
    from hetmtl.blockwise import MBI, MTLHMB
    from hetmtl.encoders import DualEncoderMTL
    from hetmtl.latefusion import SiteDML

    def run():
        if model == "dual":
            est, X = dual_export[3], dual_export[1]
        elif model == "mtlhmb":
            est, X = hmb_export[2], hmb_export[1]
        elif model == "mbi":
            Xm, y, src = mbi_data(0)
            est, X = MBI(nlam=8).fit(Xm, y, src), np.nan_to_num(Xm, nan=0.0)
        elif model == "sitedml":
            X, y, d = site_arrays(0)
            est = SiteDML(model="cate", n_folds=2, n_rep=1, random_state=0).fit(y, d, X, X[:, :1])
            X = X[:, :1]
        else:
            est = [DualEncoderMTL(), MTLHMB(), MBI(), SiteDML()][PREDICT_X.index(how) % 4]
            X = np.ones((3, 3))
        fn = getattr(est, method, None)
        if fn is None:
            return None
        Xh = _hostile_X(X, how) if X is not None else None
        if method in ("predict", "transform", "encodings"):
            return fn(Xh) if isinstance(est, (MBI, SiteDML)) else fn(Xh, task)
        if method == "confint":
            return fn(level=[0.95, 95, NAN, 0][PREDICT_X.index(how) % 4])
        return fn()

    def check(r):
        if r is None or isinstance(r, str):
            return
        if isinstance(r, dict):
            finite("output", *[v for v in r.values() if isinstance(v, np.ndarray)])
        elif isinstance(r, tuple):
            finite("output", *[v for v in r if isinstance(v, np.ndarray)])
        elif isinstance(r, pd.DataFrame):
            finite("output", r.select_dtypes("number"))
        elif isinstance(r, np.ndarray):
            finite("output", r)

    outcome("fitted-model calls", run, check, f"{model}.{method} X={how} task={task!r}")


# ----------------------------------------------------------------------------- CLI
CLI_VALUES = ["0", "-1", "2.5", "nan", "inf", "1e400", "abc", "", "99999999999999999999", "-0", "[1,2]", "{}", "A,B",
              "x=1", "=", "penalty=bogus", "C=-1", "C=nan", "bogus=1", "tau2=\"x\"", "/dev/null", "."]


@fuzz(60)
@given(cmd=st.sampled_from(["summarize", "fuse", "fuse_estimates", "study_run", "study_report", "top"]),
       option=st.sampled_from(["--folds", "--seed", "--n-rep", "--model", "--z", "--x", "--basis-center", "--site",
                               "--level", "--option", "--reps", "--jobs", "--timeout", "--threads", "--only",
                               "--methods", "--out", "--y", "--d", "--reference", "--baseline", "--tuning-folds",
                               "--treated", "--site-col"]),
       value=st.one_of(st.sampled_from(CLI_VALUES), st.text(max_size=6)), target=st.sampled_from(
           ["good", "good", "good", "missing", "dir", "fifo", "empty", "binary", "devnull"]),
       with_option=st.sampled_from([True, True, True, False]))
def test_fuzz_cli(summaries, tmp_path_factory, cmd, option, value, target, with_option):
    import contextlib
    import io

    import hetmtl.cli as cli

    tmp = tmp_path_factory.mktemp("cli")
    X, y, d = site_arrays(0, n=40)
    csv = tmp / "site.csv"
    pd.DataFrame(X, columns=["x0", "x1", "x2"]).assign(y=y, d=d).to_csv(csv, index=False)
    est_csv = tmp / "est.csv"
    pd.DataFrame({"site": ["a", "b", "c"], "estimate": [0.1, 0.3, 0.2], "se": [0.1, 0.2, 0.1]}).to_csv(est_csv, index=False)
    study_dir = tmp / "study"
    special = {"missing": tmp / "none.csv", "dir": tmp, "empty": tmp / "empty.csv", "binary": tmp / "bin.csv",
               "devnull": Path("/dev/null")}
    special["empty"].write_text("")
    special["binary"].write_bytes(bytes(range(256)) * 3)
    if target == "fifo":
        special["fifo"] = tmp / "fifo.csv"
        os.mkfifo(special["fifo"])
    spec = tmp / "toy.yaml"
    from hetmtl.studies import MethodSpec, Study
    spec.write_text(Study(name="fz", generator="_study_fakes:toy", grid={"mu": [0.0]}, n_reps=1, seed=1,
                          methods=[MethodSpec("mean", "_study_fakes:mean_method")]).to_yaml())

    def pick(good: Path) -> str:
        return str(good if target == "good" else special[target])

    base = {"summarize": ["summarize", pick(csv), "--y", "y", "--d", "d", "--site", "A", "--folds", "2", "--n-rep", "1",
                          "--out", str(tmp / "s.json")],
            "fuse": ["fuse", str(summaries[1][0]), pick(summaries[1][1])],
            "fuse_estimates": ["fuse", "--estimates", pick(est_csv)],
            "study_run": ["study", "run", pick(spec), "--out", str(study_dir), "--no-progress", "--no-figures"],
            "study_report": ["study", "report", str(study_dir) if target == "good" else pick(study_dir), "--no-figures"],
            "top": []}[cmd]
    argv = base + ([option, value] if with_option else [])
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)  # fuzzed relative paths (e.g. "--out x=1") land in the case's directory
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = cli.main(argv)
    finally:
        os.chdir(cwd)
    text = err.getvalue()
    exc = cli.last_error
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("hetmtl: warning")
             and "%|" not in ln and "it/s]" not in ln and "job/s]" not in ln]
    if code == 0:
        record("CLI", FINITE)
    elif code in (1, 2) and len(lines) == 1 and "Traceback" not in text and (
            exc is None or isinstance(exc, (HetmtlError, OSError, ImportError))):
        record("CLI", CLEAN)
    else:
        what = f"{type(exc).__module__}.{type(exc).__name__}" if exc is not None else "no exception"
        record("CLI", OTHER, f"exit {code}, {len(lines)} stderr lines, {what}: {' '.join(text.split())[:200]} "
                             f"(at {_origin(exc) if exc else '-'}) [{argv[1:]}]")


# ----------------------------------------------------------------------------- study runner
RUN_PARAMS = ["n_reps", "n_jobs", "threads_per_worker", "timeout", "only", "methods", "retry_failed"]
STUDY_FIELDS = ["grid", "fixed", "n_reps", "seed", "metrics", "seed_stride", "timeout", "name", "methods", "generator"]


@fuzz(40)
@given(run_params=st.one_of(st.just({}), override(RUN_PARAMS)), study_params=st.one_of(st.just({}), override(STUDY_FIELDS)))
def test_fuzz_study_runner(tmp_path_factory, run_params, study_params):
    from hetmtl.studies import MethodSpec, Study, load_results, run_study

    tmp = tmp_path_factory.mktemp("study")

    def run():
        fields = {"name": "fz", "generator": "_study_fakes:toy", "grid": {"mu": [0.0, 1.0]}, "n_reps": 1, "seed": 3,
                  "methods": [MethodSpec("mean", "_study_fakes:mean_method")], **study_params}
        if isinstance(fields.get("n_reps"), int) and fields["n_reps"] > 5:
            fields["n_reps"] = 5  # a valid but long study is not what is tested here
        study = Study(**fields)
        rp = dict(run_params)
        if isinstance(rp.get("n_reps"), int) and not isinstance(rp.get("n_reps"), bool) and rp["n_reps"] > 5:
            rp["n_reps"] = 5
        if isinstance(rp.get("n_jobs"), int) and not isinstance(rp.get("n_jobs"), bool) and abs(rp["n_jobs"]) > 2:
            rp["n_jobs"] = 2
        res = run_study(study, tmp, progress=False, **rp)
        return res, load_results(tmp).frame

    def check(r):
        res, frame = r
        if res.n_run and frame.empty and res.n_failed == 0:
            raise Bad("jobs ran but nothing was stored")
        finite("results", frame.select_dtypes("number"))

    outcome("study runner", run, check, f"{study_params} {run_params}")
