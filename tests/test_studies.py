"""Study runner: specs, seeding, paired data, failures, 1 vs 2 workers vs Dask, resume after SIGKILL."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import subprocess_env
from hetmtl.studies import MethodSpec, ResultStore, Study, load_results, run_study
from hetmtl.studies.spec import setting_label

FAKES = "_study_fakes"


def toy_study(n_reps=3, methods=None, **kw) -> Study:
    methods = methods or [MethodSpec("mean", f"{FAKES}:mean_method"), MethodSpec("noisy", f"{FAKES}:noisy_method")]
    return Study(name="toy", generator=f"{FAKES}:toy", methods=methods, grid={"mu": [0.0, 1.0]},
                 fixed={"n": 15}, n_reps=n_reps, seed=7, **kw)


def results(path) -> pd.DataFrame:
    df = load_results(path).frame.drop(columns=["seconds"])
    return df.sort_values(["setting_index", "replicate", "method"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------ spec
def test_settings_grid_and_labels():
    s = Study(name="g", generator=f"{FAKES}:toy", methods=[MethodSpec("m", f"{FAKES}:mean_method")],
              grid={"mu": [0, 1], "n": [10, 20, 30]})
    settings = s.settings()
    assert len(settings) == 6 and settings[0] == {"mu": 0, "n": 10} and settings[-1] == {"mu": 1, "n": 30}
    assert setting_label(settings[1]) == "mu=0,n=20"
    assert s.n_jobs(4) == 24


def test_seeds_do_not_depend_on_replicate_count_and_differ_between_jobs():
    a, b = toy_study(n_reps=3), toy_study(n_reps=50)
    assert a.seeds(1, 2) == b.seeds(1, 2)
    seeds = {a.seeds(i, r) for i in range(2) for r in range(3)}
    assert len(seeds) == 6
    assert toy_study().seeds(0, 0) != Study(**{**toy_study().__dict__, "seed": 8}).seeds(0, 0)


@pytest.mark.parametrize("bad, match", [
    ({"n_reps": 0}, "n_reps"),
    ({"grid": {"mu": []}}, "non-empty list"),
    ({"grid": {"n": [1]}, "fixed": {"n": 2}}, "both in grid and fixed"),
    ({"methods": [{"name": "a", "fn": "x"}, {"name": "a", "fn": "y"}]}, "duplicate method"),
    ({"colour": "red"}, "unknown key"),
    ({"grid": {"mean": [1]}}, "clashes with a results column"),
    ({"methods": [{"name": "a"}]}, "needs 'name' and 'fn'"),
])
def test_study_validation_errors(bad, match):
    base = {"name": "v", "generator": f"{FAKES}:toy", "methods": [{"name": "m", "fn": f"{FAKES}:mean_method"}]}
    with pytest.raises(ValueError, match=match):
        Study.from_dict({**base, **bad})


def test_unknown_method_named_before_running(tmp_path):
    s = toy_study(methods=[MethodSpec("ghost", "no-such-method")])
    with pytest.raises(ValueError, match="method 'ghost'.*unknown method 'no-such-method'"):
        run_study(s, tmp_path, progress=False)
    assert not (tmp_path / "results.sqlite").exists()


def test_yaml_and_toml_round_trip(tmp_path):
    s = toy_study(metrics=["mse"])
    (tmp_path / "s.yaml").write_text(s.to_yaml())
    assert Study.from_file(tmp_path / "s.yaml").to_dict() == s.to_dict()
    (tmp_path / "s.toml").write_text(
        'name = "toy"\ngenerator = "_study_fakes:toy"\nn_reps = 3\nseed = 7\nmetrics = ["mse"]\n'
        '[grid]\nmu = [0.0, 1.0]\n[fixed]\nn = 15\n'
        '[methods.mean]\nfn = "_study_fakes:mean_method"\n'
        '[methods.noisy]\nfn = "_study_fakes:noisy_method"\n'
    )
    assert Study.from_file(tmp_path / "s.toml").to_dict() == s.to_dict()


# ------------------------------------------------------------------------------------ running
def test_paired_data_and_splits_and_private_copies(tmp_path):
    methods = [MethodSpec("mutate", f"{FAKES}:mutating_method"), MethodSpec("a", f"{FAKES}:split_method"),
               MethodSpec("b", f"{FAKES}:split_method")]
    s = toy_study(methods=methods, splitter=f"{FAKES}:halves")
    run_study(s, tmp_path, progress=False)
    df = results(tmp_path)
    wide = df[df.method != "mutate"].pivot_table(index=["setting", "replicate"], columns="method",
                                                 values=["first_train", "sum_x"])
    np.testing.assert_array_equal(wide["first_train"]["a"], wide["first_train"]["b"])
    np.testing.assert_allclose(wide["sum_x"]["a"], wide["sum_x"]["b"])
    assert (wide["sum_x"]["a"].abs() < 1e5).all()  # the mutating method ran first but on its own copy
    # the data are those of the generator with the job's data seed
    data_seed, split_seed = s.seeds(1, 2)
    from _study_fakes import halves, toy

    x = toy(mu=1.0, n=15, random_state=data_seed)
    row = df[(df.setting_index == 1) & (df.replicate == 2) & (df.method == "a")].iloc[0]
    assert row.sum_x == pytest.approx(x["x"].sum())
    assert row.first_train == halves(x, split_seed)[0][0]


def test_failing_method_recorded_without_losing_others(tmp_path):
    methods = [MethodSpec("mean", f"{FAKES}:mean_method"),
               MethodSpec("fails", f"{FAKES}:failing_method", {"fail_on": [1]})]
    res = run_study(toy_study(methods=methods), tmp_path, progress=False)
    assert res.n_failed == 2 and res.n_run == 6
    r = load_results(tmp_path)
    assert len(r.records) == 12
    failed = r.records[r.records.status == "failed"]
    assert set(failed.method) == {"fails"} and set(failed.replicate) == {1}
    assert failed.error.str.contains("ValueError: deliberate failure at replicate 1").all()
    assert len(r.frame[r.frame.method == "mean"]) == 6 and len(r.frame[r.frame.method == "fails"]) == 4
    # a restart does not retry recorded failures; retry_failed does (and they fail again)
    again = run_study(toy_study(methods=methods), tmp_path, progress=False)
    assert again.n_run == 0 and again.n_skipped == 6
    retry = run_study(toy_study(methods=methods), tmp_path, progress=False, retry_failed=True)
    assert retry.n_run == 2 and len(load_results(tmp_path).records) == 12


def test_reserved_metric_names_are_refused(tmp_path):
    run_study(toy_study(methods=[MethodSpec("clash", f"{FAKES}:clashing_method")]), tmp_path, progress=False)
    rec = load_results(tmp_path).records
    assert (rec.status == "failed").all()
    assert rec.error.str.contains("returned the column 'mu', which the study uses itself").all()


def test_failing_generator_fails_every_method_of_its_jobs(tmp_path):
    s = Study(name="bad", generator=f"{FAKES}:bad_generator", grid={"mu": [0.0, 1.0]}, n_reps=2,
              methods=[MethodSpec("median", f"{FAKES}:median_method"), MethodSpec("mean", f"{FAKES}:mean_method")])
    run_study(s, tmp_path, progress=False)
    rec = load_results(tmp_path).records
    bad = rec[rec.setting == "mu=1.0"]
    assert (bad.status == "failed").all() and len(bad) == 4
    assert bad.error.str.startswith("data generation failed: RuntimeError: cannot draw data for mu=1.0").all()
    assert (rec[rec.setting == "mu=0.0"].status == "ok").all()


def test_restart_with_other_data_definition_is_refused(tmp_path):
    run_study(toy_study(n_reps=1), tmp_path, progress=False)
    other = Study(**{**toy_study(n_reps=1).__dict__, "fixed": {"n": 16}})
    with pytest.raises(ValueError, match="started with another generator"):
        run_study(other, tmp_path, progress=False)


def test_more_replicates_resume_and_match_a_full_run(tmp_path):
    run_study(toy_study(n_reps=2), tmp_path / "a", progress=False)
    res = run_study(toy_study(n_reps=3), tmp_path / "a", progress=False)
    assert (res.n_skipped, res.n_run) == (4, 2)
    run_study(toy_study(n_reps=3), tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(results(tmp_path / "a"), results(tmp_path / "b"))


def test_same_results_with_one_and_two_workers_and_on_dask(tmp_path):
    import distributed  # noqa: F401  (a test dependency: make test installs it)
    from distributed import Client, LocalCluster

    run_study(toy_study(), tmp_path / "one", n_jobs=1, progress=False)
    run_study(toy_study(), tmp_path / "two", n_jobs=2, progress=False)
    # in-process cluster (inproc transport); the HTTP servers listen on loopback only
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0",
                      worker_dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}) as cluster, \
            Client(cluster) as client:
        run_study(toy_study(), tmp_path / "dask", scheduler=client, progress=False)
        run_study(toy_study(), tmp_path / "dask_addr", scheduler=cluster.scheduler_address, progress=False)
    one = results(tmp_path / "one")
    assert len(one) == 12
    pd.testing.assert_frame_equal(one, results(tmp_path / "two"))
    pd.testing.assert_frame_equal(one, results(tmp_path / "dask"))
    pd.testing.assert_frame_equal(one, results(tmp_path / "dask_addr"))


def test_store_ignores_duplicate_keys(tmp_path):
    rec = {"study": "s", "setting": "default", "setting_index": 0, "params": {}, "replicate": 0, "method": "m",
           "status": "ok", "error": None, "seconds": 0.1, "rows": [{"a": 1.0}]}
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.append([rec]) == 1
        assert store.append([{**rec, "rows": [{"a": 2.0}]}]) == 0
        assert store.frame("s")["a"].tolist() == [1.0]


# ------------------------------------------------------------------------------------ SIGKILL
def _count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(str(db), timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_resume_after_sigkill_counts_every_job_once(tmp_path):
    log = tmp_path / "calls.log"
    study = Study(name="slow", generator=f"{FAKES}:toy", grid={"mu": [0.0, 1.0]}, n_reps=4, seed=3,
                  methods=[MethodSpec("slow", f"{FAKES}:slow_method", {"seconds": 0.4, "log": str(log)})])
    spec = tmp_path / "slow.yaml"
    spec.write_text(study.to_yaml())
    out = tmp_path / "out"
    env = subprocess_env()
    cmd = [sys.executable, "-m", "hetmtl.cli", "study", "run", str(spec), "--out", str(out), "--jobs", "1",
           "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "results.sqlite"
    deadline = time.time() + 120
    while _count_rows(db) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    with sqlite3.connect(str(db)) as conn:
        before = set(conn.execute("SELECT setting, replicate FROM results"))
    assert 2 <= len(before) < 8
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} already done" in done.stdout
    with sqlite3.connect(str(db)) as conn:
        keys = conn.execute("SELECT setting, replicate, method FROM results").fetchall()
    assert len(keys) == 8 and len(set(keys)) == 8
    # a job stored before the kill was never run again
    calls = [tuple(line.split()[1:]) for line in log.read_text().splitlines()]
    for setting, rep in before:
        mu = setting.split("=")[1]
        assert calls.count((mu, str(rep))) == 1


def test_threads_capped_inside_jobs_and_restored(tmp_path):
    import torch

    before = torch.get_num_threads()
    env_before = os.environ.get("OMP_NUM_THREADS")
    s = Study(name="thr", generator=f"{FAKES}:toy", n_reps=1, methods=[MethodSpec("t", f"{FAKES}:threads_method")])
    run_study(s, tmp_path, threads_per_worker=1, progress=False)
    row = load_results(tmp_path).frame.iloc[0]
    assert (row.torch_threads, row.blas_threads, row.omp_env) == (1, 1, 1)
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == env_before


# ------------------------------------------------------------------------------------ timeout
def _timeout_study(**kw) -> Study:
    return Study(name="to", generator=f"{FAKES}:toy", grid={"mu": [0.0, 1.0]}, n_reps=3, seed=5,
                 methods=[MethodSpec("quick", f"{FAKES}:mean_method"),
                          MethodSpec("sleepy", f"{FAKES}:sleepy_method", {"seconds": 60.0, "on": [1]}),
                          MethodSpec("after", f"{FAKES}:median_method")], **kw)


def _check_timed_out(path, limit="3"):
    rec = load_results(path).records.set_index(["setting", "replicate", "method"]).sort_index()
    assert len(rec) == 18
    for mu in ("mu=0.0", "mu=1.0"):
        assert rec.loc[(mu, 1, "quick"), "status"] == "ok", rec.loc[(mu, 1, "quick"), "error"]  # done before the limit: kept
        assert rec.loc[(mu, 1, "sleepy"), "status"] == "failed"
        assert rec.loc[(mu, 1, "sleepy"), "error"].startswith(f"timed out after {limit} s")
        assert rec.loc[(mu, 1, "after"), "error"] == f"not run: the job timed out after {limit} s"
        assert (rec.loc[[(mu, r, m) for r in (0, 2) for m in ("quick", "sleepy", "after")], "status"] == "ok").all()


def test_timeout_local_one_and_two_workers_and_results_unchanged(tmp_path):
    t0 = time.perf_counter()
    res = run_study(_timeout_study(), tmp_path / "one", timeout=3, progress=False)
    assert res.n_failed == 2 and time.perf_counter() - t0 < 30  # two sleeping jobs stopped, not 2 x 60 s
    _check_timed_out(tmp_path / "one")
    run_study(_timeout_study(timeout=3), tmp_path / "two", n_jobs=2, progress=False)  # the study's own timeout
    _check_timed_out(tmp_path / "two")
    pd.testing.assert_frame_equal(results(tmp_path / "one"), results(tmp_path / "two"))
    # the jobs that finished give the numbers of a run without a time limit (no fork)
    fast = Study(**{**_timeout_study().__dict__, "methods": _timeout_study().methods[::2]})
    run_study(fast, tmp_path / "plain", progress=False)
    plain = results(tmp_path / "plain")
    pd.testing.assert_frame_equal(plain[plain.replicate != 1].reset_index(drop=True),
                                  results(tmp_path / "one").query("method != 'sleepy' and replicate != 1")
                                  .reset_index(drop=True)[plain.columns])


def test_timeout_on_dask_and_crashing_job(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0",
                      worker_dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}) as cluster, \
            Client(cluster) as client:
        run_study(_timeout_study(), tmp_path / "dask", scheduler=client, timeout=3, progress=False)
    _check_timed_out(tmp_path / "dask")
    # a method that kills its process: with a timeout the job runs in a child, the study goes on
    s = Study(name="die", generator=f"{FAKES}:toy", n_reps=2,
              methods=[MethodSpec("ok", f"{FAKES}:mean_method"), MethodSpec("die", f"{FAKES}:dying_method")])
    run_study(s, tmp_path / "die", timeout=30, progress=False)
    rec = load_results(tmp_path / "die").records
    assert (rec[rec.method == "ok"].status == "ok").all()
    assert rec[rec.method == "die"].error.str.contains("process died \\(killed by signal 9\\)").all()


def test_only_and_methods_filters(tmp_path):
    res = run_study(toy_study(), tmp_path, only={"mu": [1]}, methods=["mean"], progress=False)
    assert (res.n_run, res.n_skipped) == (3, 0)
    rec = load_results(tmp_path).records
    assert set(rec.setting) == {"mu=1.0"} and set(rec.method) == {"mean"}
    res = run_study(toy_study(), tmp_path, progress=False)  # the rest is still pending
    assert res.n_run == 6 and len(load_results(tmp_path).records) == 12
    with pytest.raises(ValueError, match="grid parameter 'mu' has no value"):
        run_study(toy_study(), tmp_path, only={"mu": [3.0]}, progress=False)
    with pytest.raises(ValueError, match="has no method"):
        run_study(toy_study(), tmp_path, methods=["nope"], progress=False)


def test_seed_stride_gives_published_integer_seeds(tmp_path):
    s = toy_study(seed_stride=1000)
    assert s.seeds(0, 2) == s.seeds(1, 2) == (2007, 2007)
    assert "seed_stride" in s.data_key() and "seed_stride" not in toy_study().data_key()
    back = Study.from_dict(toy_study(seed_stride=1000, timeout=5).to_dict())
    assert (back.seed_stride, back.timeout, back.seeds(1, 3)) == (1000, 5.0, (3007, 3007))
    with pytest.raises(ValueError, match="seed_stride"):
        toy_study(seed_stride=0)
    with pytest.raises(ValueError, match="timeout"):
        toy_study(timeout=-1)
