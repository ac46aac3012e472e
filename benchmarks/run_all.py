"""Run every benchmark script (``benchmarks/bench_*.py``) in turn; each records its own numbers in
benchmarks/results/. ``python -m benchmarks.run_all [name ...]`` runs only the named ones."""
from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    wanted = argv if argv is not None else sys.argv[1:]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        importlib.import_module(f"benchmarks.{name}")  # fail early on import errors
        print(f"=== {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
