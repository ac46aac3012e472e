"""The hetmtl command line: study list/run/report, summarize (site side), fuse (coordinator side)."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import simulate_site, subprocess_env

from hetmtl.cli import main
from hetmtl.studies import MethodSpec, Study

ROOT = Path(__file__).resolve().parents[1]
ENV = subprocess_env()


def toy_yaml(tmp_path) -> Path:
    pd.DataFrame({"mu": [1.0], "method": ["mean"], "metric": ["mse"], "value": [0.05]}).to_csv(tmp_path / "ref.csv",
                                                                                              index=False)
    s = Study(name="clitoy", generator="_study_fakes:toy", grid={"mu": [0.0, 1.0]}, n_reps=5, seed=11,
              reference="ref.csv",
              methods=[MethodSpec("mean", "_study_fakes:mean_method"), MethodSpec("median", "_study_fakes:median_method")])
    path = tmp_path / "clitoy.yaml"
    path.write_text(s.to_yaml())
    return path


def test_study_list(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert "latefusion-eta" in out and "blockwise-A" in out


def test_study_run_subprocess_then_report(tmp_path):
    spec = toy_yaml(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hetmtl.cli", "study", "run", str(spec), "--reps", "2", "--jobs", "2",
                           "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4/4" in proc.stderr and "failed=0" in proc.stderr  # the progress bar: done, failed, ETA
    assert "4 jobs, 0 already done, 4 run, 0 with failures" in proc.stdout
    summ = pd.read_csv(out / "report" / "summary.csv")
    ref = pd.read_csv(out / "report" / "reference.csv")  # the study file's reference, found next to it
    ours = summ.loc[(summ.mu == 1.0) & (summ.method == "mean") & (summ.metric == "mse"), "mean"].item()
    assert ref.delta.item() == pytest.approx(ours - 0.05)
    assert set(summ.method) == {"mean", "median"} and (summ.n_reps == 2).all()
    # the report command rewrites it elsewhere; the paired table has median - mean per setting
    assert main(["study", "report", str(out), "--out", str(tmp_path / "rep2"), "--no-figures"]) == 0
    pdiff = pd.read_csv(tmp_path / "rep2" / "paired_mse.csv")
    assert pdiff.method.tolist() == ["median", "median"] and (pdiff.baseline == "mean").all()
    # rerunning does nothing new
    assert main(["study", "run", str(spec), "--reps", "2", "--out", str(out), "--no-progress", "--no-report"]) == 0


def test_study_run_errors(tmp_path, capsys):
    assert main(["study", "run", "no-such-study", "--out", str(tmp_path)]) == 1
    assert "unknown built-in study 'no-such-study'" in capsys.readouterr().err
    assert main(["study", "run", str(tmp_path / "missing.yaml")]) == 1
    with pytest.raises(SystemExit):
        main(["study", "run", "x", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert main(["study", "report", str(tmp_path / "nothing")]) == 1
    assert "no results store" in capsys.readouterr().err


def _site_csv(tmp_path, rng) -> Path:
    y, d, X = simulate_site(rng, n=160)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(y=y, d=d)
    other = df.sample(40, random_state=0).assign(y=1e3)  # rows of another site, must be dropped
    df = pd.concat([df.assign(hospital="A"), other.assign(hospital="B")], ignore_index=True)
    path = tmp_path / "site.csv"
    df.to_csv(path, index=False)
    return path


def test_summarize_matches_direct_fit(tmp_path, rng):
    from hetmtl.latefusion import SiteDML, SiteSummary

    csv = _site_csv(tmp_path, rng)
    out = tmp_path / "A.json"
    assert main(["summarize", str(csv), "--y", "y", "--d", "d", "--site", "A", "--site-col", "hospital",
                 "--model", "ate", "--folds", "2", "--seed", "3", "--out", str(out)]) == 0
    s = SiteSummary.read_json(out)
    df = pd.read_csv(csv)
    df = df[df.hospital == "A"]
    X = df[[f"x{j}" for j in range(5)]].to_numpy()
    ref = SiteDML(model="ate", n_folds=2, tuning_folds="reuse", random_state=3).fit(df.y.to_numpy(), df.d.to_numpy(), X)
    assert s.site == "A" and s.n == 160
    np.testing.assert_allclose(s.theta, ref.coef_)
    np.testing.assert_allclose(s.se, ref.se_)
    assert len(s.cv_folds) == 2


def test_summarize_names_missing_column(tmp_path, rng, capsys):
    csv = _site_csv(tmp_path, rng)
    code = main(["summarize", str(csv), "--y", "outcome", "--d", "d", "--x", "x0", "--site", "A",
                 "--site-col", "hospital", "--out", str(tmp_path / "s.json")])
    assert code == 1 and "outcome" in capsys.readouterr().err
    code = main(["summarize", str(csv), "--y", "y", "--d", "d", "--site", "C", "--site-col", "hospital",
                 "--out", str(tmp_path / "s.json")])
    assert code == 1 and "no rows of site 'C'" in capsys.readouterr().err


def test_fuse(tmp_path, rng, capsys):
    from hetmtl.latefusion import SiteDML

    paths = []
    for k in range(3):
        y, d, X = simulate_site(rng, n=120, theta=1.0 + 0.1 * k)
        est = SiteDML(model="plr", n_folds=2, tuning_folds="reuse", random_state=k).fit(y, d, X)
        paths.append(tmp_path / f"s{k}.json")
        est.to_summary(site=f"s{k}").to_json(paths[-1])
    available = hasattr(importlib.import_module("hetmtl.latefusion"), "LateFusion")
    code = main(["fuse", *map(str, paths), "--out", str(tmp_path / "fused.csv")])
    if not available:
        assert code == 2
        assert "LateFusion) is not available" in capsys.readouterr().err
    else:
        assert code == 0
        fused = pd.read_csv(tmp_path / "fused.csv")
        assert len(fused) == 3 and fused.site.tolist() == ["s0", "s1", "s2"] and np.isfinite(fused["coef"]).all()
        # C = infinity pools completely: every site gets the same estimate
        assert main(["fuse", *map(str, paths), "--option", "C=1e308", "--option", "penalty=\"squared\"",
                     "--out", str(tmp_path / "pooled.csv")]) == 0
        pooled = pd.read_csv(tmp_path / "pooled.csv")
        np.testing.assert_allclose(pooled["coef"], pooled["coef"].iloc[0], rtol=1e-6)


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "hetmtl.cli", "--help"], env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "summarize" in proc.stdout and "fuse" in proc.stdout


def test_console_script_declared():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from hetmtl.studies.spec import resolve

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hetmtl"] == "hetmtl.cli:main"
    assert resolve(scripts["hetmtl"]) is main


def test_summarize_cate_with_agreed_basis(tmp_path, rng, capsys):
    from hetmtl.latefusion import SiteDML, SiteSummary

    y, d, X = simulate_site(rng, n=200, cate=True)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(5)]).assign(y=y, d=d)
    csv = tmp_path / "s.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "s.json"
    args = ["summarize", str(csv), "--y", "y", "--d", "d", "--z", "x0", "x2", "--model", "cate", "--site", "A",
            "--folds", "2", "--seed", "1", "--out", str(out)]
    assert main(args + ["--basis-center", "0.1,-0.2", "--basis-scale", "1.5,2"]) == 0
    s = SiteSummary.read_json(out)
    assert s.coef_names == ["const", "x0", "x2"]
    np.testing.assert_allclose(s.basis["center"], [0.1, -0.2])
    np.testing.assert_allclose(s.basis["scale"], [1.5, 2.0])
    X_cols = df[[f"x{j}" for j in range(5)]].to_numpy()
    ref = SiteDML(model="cate", n_folds=2, tuning_folds="reuse", basis_center=[0.1, -0.2], basis_scale=[1.5, 2.0],
                  random_state=1).fit(y, d, X_cols, df[["x0", "x2"]].to_numpy())
    np.testing.assert_allclose(s.theta, ref.coef_, rtol=1e-6, atol=1e-10)
    assert main(args + ["--basis-center", "0.1"]) == 1
    assert "--basis-center has 1 values for 2 effect modifier(s)" in capsys.readouterr().err


def test_study_run_timeout_only_and_methods_flags(tmp_path, capsys):
    s = Study(name="clisleep", generator="_study_fakes:toy", grid={"mu": [0.0, 1.0]}, n_reps=2, seed=3,
              methods=[MethodSpec("mean", "_study_fakes:mean_method"),
                       MethodSpec("sleepy", "_study_fakes:sleepy_method", {"seconds": 60.0, "on": [1]}),
                       MethodSpec("median", "_study_fakes:median_method")])
    spec = tmp_path / "sleep.yaml"
    spec.write_text(s.to_yaml())
    out = tmp_path / "run"
    assert main(["study", "run", str(spec), "--out", str(out), "--timeout", "3", "--only", "mu=1.0",
                 "--methods", "mean", "sleepy", "--no-progress", "--no-report"]) == 0
    assert "2 jobs, 0 already done, 2 run, 1 with failures" in capsys.readouterr().out
    from hetmtl.studies import load_results

    rec = load_results(out).records
    assert set(rec.setting) == {"mu=1.0"} and set(rec.method) == {"mean", "sleepy"}
    bad = rec[rec.status == "failed"]
    assert bad.replicate.tolist() == [1] and bad.error.item().startswith("timed out after 3 s")
    assert main(["study", "run", str(spec), "--out", str(out), "--only", "mu", "--no-report"]) == 1
    assert "--only must be PARAM=VALUE" in capsys.readouterr().err
    assert main(["study", "run", str(spec), "--out", str(out), "--only", "sigma=1", "--no-report"]) == 1
    assert "not a grid parameter" in capsys.readouterr().err
