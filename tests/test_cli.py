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
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert main(["study", "run", "x", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheduler: not allowed with argument --jobs" in err
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
                 "--methods", "mean", "sleepy", "--no-progress", "--no-report"]) == 1  # a job failed
    cap = capsys.readouterr()
    assert "2 jobs, 0 already done, 2 run, 1 with failures" in cap.out
    assert cap.err == ("hetmtl: error: study clisleep: 1 of 2 jobs have failed methods (1 in this run); see the "
                       "report's failures.csv, rerun with --retry-failed\n")
    from hetmtl.studies import load_results

    rec = load_results(out).records
    assert set(rec.setting) == {"mu=1.0"} and set(rec.method) == {"mean", "sleepy"}
    bad = rec[rec.status == "failed"]
    assert bad.replicate.tolist() == [1] and bad.error.item().startswith("timed out after 3 s")
    assert main(["study", "run", str(spec), "--out", str(out), "--only", "mu", "--no-report"]) == 1
    assert "--only must be PARAM=VALUE" in capsys.readouterr().err
    assert main(["study", "run", str(spec), "--out", str(out), "--only", "sigma=1", "--no-report"]) == 1
    assert "not a grid parameter" in capsys.readouterr().err


# ------------------------------------------------------------------------ hostile input (issues #23, #25)
def _one_error_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("hetmtl: error:") or err.startswith("hetmtl "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_version_and_help_on_every_option(capsys):
    import hetmtl
    from hetmtl.cli import build_parser
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hetmtl {hetmtl.__version__}"

    def walk(parser):
        for action in parser._actions:
            if action.dest == "help":
                continue
            if action.choices and isinstance(action.choices, dict):  # sub-commands
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action
    undocumented = [(prog, a.dest) for prog, a in walk(build_parser()) if not a.help]
    assert undocumented == []
    assert main(["summarize", "--help"]) == 0
    helptext = " ".join(capsys.readouterr().out.split())
    assert "same as MultiSiteData.from_dataframe" in helptext and "effect modifiers (--z) stay among the covariates" in helptext


def test_special_and_missing_inputs_refused_in_one_line(tmp_path, capsys, rng):
    import os
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    base = ["--y", "y", "--d", "d", "--site", "A", "--out", str(tmp_path / "s.json")]
    for path, needle in [(fifo, "not a regular file"), (tmp_path, "is a directory"),
                         (tmp_path / "none.csv", "does not exist")]:
        assert main(["summarize", str(path), *base]) == 1  # returns: the FIFO is never opened
        _one_error_line(capsys, str(path), needle)
    assert main(["fuse", str(fifo)]) == 1
    _one_error_line(capsys, str(fifo), "not a regular file")
    assert main(["fuse", "--estimates", str(fifo)]) == 1
    _one_error_line(capsys, str(fifo), "not a regular file")
    fifo_yaml = tmp_path / "s.yaml"
    os.mkfifo(fifo_yaml)
    assert main(["study", "run", str(fifo_yaml)]) == 1
    _one_error_line(capsys, str(fifo_yaml), "not a regular file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00a,b\n1")
    assert main(["fuse", str(deep)]) == 1
    _one_error_line(capsys, str(deep))
    assert main(["summarize", str(bad), *base]) == 1
    _one_error_line(capsys, str(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["summarize", str(empty), *base]) == 1
    _one_error_line(capsys, str(empty), "cannot read the data file")


def test_summarize_arguments_checked_before_fitting(tmp_path, rng, capsys, monkeypatch):
    from hetmtl.latefusion import SiteDML
    csv = _site_csv(tmp_path, rng)

    def no_fit(*a, **k):
        raise AssertionError("fitted before the arguments were checked")
    monkeypatch.setattr(SiteDML, "fit", no_fit)
    base = ["summarize", str(csv), "--y", "y", "--d", "d", "--site", "A", "--site-col", "hospital"]
    out = str(tmp_path / "s.json")
    cases = [(["--folds", "1", "--out", out], "--folds must be >= 2"),
             (["--seed", "-1", "--out", out], "--seed must be >= 0"),
             (["--n-rep", "0", "--out", out], "--n-rep must be >= 1"),
             (["--out", str(tmp_path)], "is a directory"),
             (["--out", str(tmp_path / "no" / "s.json")], "does not exist"),
             (["--z", "x0", "--model", "cate", "--basis-center", "nan", "--out", out], "--basis-center must be finite"),
             (["--z", "x0", "x0", "--model", "cate", "--out", out], "--z names a column twice"),
             (["--x", "x0", "nope", "--out", out], "--x names column(s) ['nope']")]
    for extra, needle in cases:
        assert main(base + extra) == 1, extra
        _one_error_line(capsys, needle)
    assert main(base + ["--folds", "2.5", "--out", out]) == 2  # argparse: not an int
    _one_error_line(capsys, "--folds")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_summarize_blames_the_right_site_and_column(tmp_path, rng, capsys):
    csv = _site_csv(tmp_path, rng)  # x1 is continuous: not a 0/1 treatment
    assert main(["summarize", str(csv), "--y", "y", "--d", "x1", "--site", "A", "--site-col", "hospital",
                 "--model", "ate", "--out", str(tmp_path / "s.json")]) == 1
    err = _one_error_line(capsys, str(csv), "site 'A'", "'x1'")
    assert "'B'" not in err and "_site" not in err
    assert not (tmp_path / "s.json").exists()


def test_summarize_uses_the_python_covariate_rule(tmp_path, rng):
    from hetmtl.data.multisite import MultiSiteData
    from hetmtl.latefusion import SiteDML, SiteSummary
    y, d, X = simulate_site(rng, n=120, cate=True)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(5)]).assign(y=y, d=d)
    csv = tmp_path / "s.csv"
    df.to_csv(csv, index=False)
    assert main(["summarize", str(csv), "--y", "y", "--d", "d", "--z", "x0", "--model", "cate", "--site", "A",
                 "--folds", "2", "--seed", "4", "--out", str(tmp_path / "s.json")]) == 0
    data = MultiSiteData.from_dataframe(df.assign(site="A"), "y", "d", "site", z_cols=["x0"])
    s = data.site_arrays("A")
    assert s.X.shape[1] == 5  # the modifier x0 stays among the covariates
    ref = SiteDML(model="cate", n_folds=2, tuning_folds="reuse", random_state=4).fit(s.y, s.d, s.X, s.Z)
    np.testing.assert_allclose(SiteSummary.read_json(tmp_path / "s.json").theta, ref.coef_, rtol=1e-6, atol=1e-10)


def test_fuse_option_and_out_errors(tmp_path, rng, capsys, monkeypatch):
    from hetmtl.latefusion import LateFusion, SiteDML
    paths = []
    for k in range(2):
        y, d, X = simulate_site(rng, n=100)
        paths.append(str(tmp_path / f"s{k}.json"))
        SiteDML(model="plr", n_folds=2, tuning_folds="reuse", random_state=k).fit(y, d, X).to_summary(
            site=f"s{k}").to_json(paths[-1])

    def no_fit(*a, **k):
        raise AssertionError("fitted before the arguments were checked")
    monkeypatch.setattr(LateFusion, "fit", no_fit)
    for extra, needle in [(["--option", "bogus=1"], "--option 'bogus' is not a LateFusion option; known options:"),
                          (["--option", "novalue"], "--option must be KEY=VALUE"),
                          (["--level", "95"], "--level"), (["--level", "nan"], "--level"),
                          (["--out", str(tmp_path)], "is a directory"),
                          (["--out", str(tmp_path / "none" / "f.csv")], "does not exist")]:
        assert main(["fuse", *paths, *extra]) == 1, extra
        _one_error_line(capsys, needle)
    assert main(["fuse"]) == 1
    _one_error_line(capsys, "give summary JSON files or --estimates")
    assert main(["fuse", *paths, "--bogus"]) == 2
    _one_error_line(capsys, "unrecognized arguments: --bogus")
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_atomic_leaves_nothing_behind(tmp_path):
    from hetmtl._jsonio import write_atomic
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="dir: a directory"):
        write_atomic(target, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    write_atomic(tmp_path / "f.json", "{}")
    assert (tmp_path / "f.json").read_text() == "{}" and len(list(tmp_path.iterdir())) == 2


def test_internal_errors_are_one_line_and_debug_shows_them(monkeypatch, capsys):
    import hetmtl.cli as cli

    def boom(args):
        raise KeyError("x")
    monkeypatch.setattr(cli, "_cmd_study_list", boom)
    assert main(["study", "list"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["study", "list", "--debug"])


def test_corrupt_study_store_and_failed_jobs_exit_codes(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"garbage" * 200)
    spec = toy_yaml(tmp_path)
    assert main(["study", "run", str(spec), "--out", str(out), "--no-progress"]) == 1
    _one_error_line(capsys, str(out / "results.sqlite"), "cannot open the results store")
    assert main(["study", "report", str(out)]) == 1
    _one_error_line(capsys, "results.sqlite")
    s = Study(name="allfail", generator="_study_fakes:toy", grid={"mu": [0.0]}, n_reps=2, seed=1,
              methods=[MethodSpec("f", "_study_fakes:failing_method", {"fail_on": [0, 1]})])
    path = tmp_path / "allfail.yaml"
    path.write_text(s.to_yaml())
    assert main(["study", "run", str(path), "--out", str(tmp_path / "af"), "--no-progress", "--no-report"]) == 1
    _one_error_line(capsys, "2 of 2 jobs have failed methods")
    for bad, needle in [(["--reps", "0"], "--reps must be >= 1"), (["--jobs", "0"], "--jobs"),
                        (["--timeout", "-1"], "--timeout"), (["--threads", "0"], "--threads")]:
        assert main(["study", "run", str(path), "--out", str(tmp_path / "af2"), *bad]) == 1, bad
        _one_error_line(capsys, needle)


def test_fuse_refuses_hostile_summaries_naming_the_file(tmp_path, rng, capsys):
    """Issue #25 finding 5, through the CLI: size cap, NaN literals, magnitudes, n against the folds."""
    import json

    from hetmtl._jsonio import canonical_digest
    from hetmtl.latefusion import SiteDML
    from hetmtl.latefusion.summary import MAX_FILE_BYTES
    paths = []
    for k in range(2):
        y, d, X = simulate_site(rng, n=100)
        paths.append(tmp_path / f"s{k}.json")
        SiteDML(model="plr", n_folds=2, tuning_folds="reuse", random_state=k).fit(y, d, X).to_summary(
            site=f"s{k}").to_json(paths[-1])
    good = json.loads(paths[0].read_text())

    def variant(name, edit=None, text=None):
        obj = json.loads(json.dumps(good))
        if edit is not None:
            edit(obj["payload"])
            obj["sha256"] = canonical_digest(obj["payload"])
        p = tmp_path / name
        p.write_text(text if text is not None else json.dumps(obj))
        return p

    big = tmp_path / "big.json"
    with open(big, "w") as fh:
        fh.write(" " * (MAX_FILE_BYTES + 1))
    cases = [(big, f"more than the {MAX_FILE_BYTES}-byte limit"),
             (variant("nan.json", text=paths[0].read_text().replace('"theta": [', '"theta": [NaN, ', 1)),
              "not valid JSON (NaN"),
             (variant("huge.json", lambda p: p.update(theta=[1e101])), "within ±1e+100"),
             (variant("n.json", lambda p: p.update(n=10**18)), "n must be a positive integer below 2**53"),
             (variant("n_folds.json", lambda p: p.update(n=10**6)), "does not equal the site's n = 1000000")]
    msgs = []
    for path, needle in cases:
        assert main(["fuse", str(paths[1]), str(path)]) == 1, path
        msgs.append(_one_error_line(capsys, str(path), needle))


def test_study_report_survives_a_damaged_row(tmp_path, capsys):
    import sqlite3
    spec = toy_yaml(tmp_path)
    out = tmp_path / "run"
    assert main(["study", "run", str(spec), "--reps", "2", "--out", str(out), "--no-progress", "--no-report"]) == 0
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE results SET rows = 'garbage' WHERE method = 'median' AND replicate = 1 AND setting = 'mu=0.0'")
    con.commit()
    con.close()
    capsys.readouterr()
    assert main(["study", "report", str(out), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "setting mu=0.0, replicate 1, method 'median': damaged row ignored" in err and "Traceback" not in err
    assert main(["study", "run", str(spec), "--reps", "2", "--out", str(out), "--no-progress", "--no-report"]) == 0
    cap = capsys.readouterr()
    assert "damaged row (its metric rows are not valid JSON); recomputing it" in cap.err
    assert "4 jobs, 3 already done, 1 run, 0 with failures" in cap.out
