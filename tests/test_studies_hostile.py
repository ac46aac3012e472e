"""Study runner under hostile conditions (issue #25): two runners on one store, a corrupt or
unwritable store, damaged rows, failed-job counts."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from conftest import subprocess_env
from hetmtl.exceptions import HetmtlError, InputError
from hetmtl.studies import MethodSpec, ResultStore, Study, load_results, run_study, write_report
from hetmtl.studies.store import StoreError

FAKES = "_study_fakes"


def toy(n_reps=2, methods=None) -> Study:
    methods = methods or [MethodSpec("mean", f"{FAKES}:mean_method"), MethodSpec("noisy", f"{FAKES}:noisy_method")]
    return Study(name="toy", generator=f"{FAKES}:toy", methods=methods, grid={"mu": [0.0, 1.0]},
                 fixed={"n": 15}, n_reps=n_reps, seed=7)


def test_two_runners_on_one_store_split_the_work(tmp_path):
    log = tmp_path / "log.txt"
    script = textwrap.dedent(f"""
        import sys
        from hetmtl.studies import MethodSpec, Study, run_study
        study = Study(name="split", generator="{FAKES}:toy", grid={{"mu": [0.0, 1.0]}}, n_reps=5, seed=1,
                      methods=[MethodSpec("slow", "{FAKES}:slow_method", {{"seconds": 0.4, "log": r"{log}"}})])
        res = run_study(study, r"{tmp_path / 'out'}", progress=False)
        print("RUN", res.n_run, "ELSEWHERE", res.n_elsewhere)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = log.read_text().split("\n")[:-1]
    jobs = Counter(line.split(" ", 1)[1] for line in lines)
    assert len(jobs) == 10 and set(jobs.values()) == {1}  # every job ran exactly once
    pids = Counter(line.split(" ", 1)[0] for line in lines)
    assert len(pids) == 2 and min(pids.values()) >= 2  # both runners did a share
    runs = [int(o.split()[1]) for o, _ in outs]
    assert sum(runs) == 10
    with ResultStore(tmp_path / "out" / "results.sqlite") as store:
        assert len(store.records("split")) == 10
        assert store._conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # all released


def test_claims_of_a_dead_runner_are_released(tmp_path):
    out = tmp_path / "out"
    with ResultStore(out / "results.sqlite") as store:
        store._claims()
        store._conn.execute("INSERT INTO claims VALUES ('toy', 'mu=0.0', 0, 'ghost', ?, 999999999, 'then')",
                            (__import__("socket").gethostname(),))
        store._conn.commit()
    res = run_study(toy(), out, progress=False)
    assert res.n_run == 4 and res.n_elsewhere == 0


def test_corrupt_store_is_one_named_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=f"{out / 'results.sqlite'}: cannot open the results store .*not a database"):
        run_study(toy(), out, progress=False)
    with pytest.raises(StoreError, match="results.sqlite"):
        load_results(out)
    assert issubclass(StoreError, HetmtlError)


def test_failed_write_is_one_named_error(tmp_path, monkeypatch):
    def full(self, records):
        with self._errors("write"):
            raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(ResultStore, "append", full)
    with pytest.raises(StoreError, match="cannot write the results store \\(database or disk is full\\)"):
        run_study(toy(), tmp_path / "out", progress=False)


def test_damaged_row_is_reported_and_recomputed(tmp_path):
    out = tmp_path / "out"
    run_study(toy(), out, progress=False)
    full = load_results(out).frame.drop(columns="seconds")
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE results SET rows = '{broken' WHERE method = 'mean' AND replicate = 1 AND setting = 'mu=1.0'")
    con.execute("UPDATE results SET params = 'null' WHERE method = 'noisy' AND replicate = 0 AND setting = 'mu=0.0'")
    con.commit()
    con.close()
    with pytest.warns(UserWarning, match="setting mu=1.0, replicate 1, method 'mean': damaged row ignored"):
        res = load_results(out)
    assert len(res.frame) == len(full) - 2
    with pytest.warns(UserWarning, match="damaged row"):
        written = write_report(out, figures=False)
    assert written["report"].exists()
    again = run_study(toy(), out, progress=False)
    assert again.n_damaged == 2 and again.n_run == 2
    back = load_results(out).frame.drop(columns="seconds")
    assert back.sort_values(["setting_index", "replicate", "method"]).reset_index(drop=True).equals(
        full.sort_values(["setting_index", "replicate", "method"]).reset_index(drop=True))  # same seeds, same numbers


def test_failed_jobs_are_counted_also_after_resume(tmp_path):
    study = toy(n_reps=3, methods=[MethodSpec("fail", f"{FAKES}:failing_method", {"fail_on": [0, 2]})])
    res = run_study(study, tmp_path, progress=False)
    assert res.n_failed == 4 and res.n_failed_stored == 4
    again = run_study(study, tmp_path, progress=False)
    assert again.n_run == 0 and again.n_failed == 0 and again.n_failed_stored == 4


@pytest.mark.parametrize("kw, match", [({"n_jobs": 0}, "n_jobs"), ({"n_jobs": 2.5}, "n_jobs"),
                                       ({"timeout": float("nan")}, "timeout"), ({"timeout": -1}, "timeout"),
                                       ({"n_reps": 0}, "n_reps"), ({"threads_per_worker": "2"}, "threads_per_worker")])
def test_run_arguments_are_checked(tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        run_study(toy(), tmp_path, progress=False, **kw)


def test_study_files_refused_without_blocking(tmp_path):
    import os
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=f"{fifo}: not a regular file"):
        Study.from_file(fifo)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match=f"{bad}: not valid YAML"):
        Study.from_file(bad)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(InputError, match=f"{bad}: not valid TOML"):
        Study.from_file(bad)
    with pytest.raises(InputError, match="does not exist"):
        Study.from_file(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="cannot import module 'no_such_module_xyz'"):
        Study(name="x", generator="no_such_module_xyz:f", methods=[MethodSpec("m", f"{FAKES}:mean_method")]
              ).check_resolvable()


def test_readers_do_not_write_to_the_store(tmp_path):
    import hashlib
    run_study(toy(), tmp_path / "out", progress=False)
    path = tmp_path / "out" / "results.sqlite"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    load_results(tmp_path / "out")
    write_report(tmp_path / "out", out=tmp_path / "rep", figures=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
