"""Run the Python vignettes and record their output for the documentation site.

The site shows each vignette's source with the output recorded here (running them at build time
would take about 1–1.5 minutes of the build, and ``make test-vignettes`` runs them anyway). The
recording stores the SHA-256 of the vignette source; ``docs/conf.py`` refuses (a build warning,
an error under ``-W``) a recording whose vignette has changed since, one without ``[check]``
lines, or one with a failed check.

Usage, from the repository root with the project's Python (the working tree is used when it
holds the compiled extension, after ``make dev``; else the installed package)::

    .venv/bin/python docs/record_vignettes.py            # all vignettes
    .venv/bin/python docs/record_vignettes.py encoders   # one
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

from _vignettes import OUTPUT_DIR, ROOT, VIGNETTE_DIR, VIGNETTES, vignette_sha256


def record(name: str) -> float:
    """Run one vignette (cwd ``vignettes/python``, Agg backend) and write its recorded output."""
    env = dict(os.environ, MPLBACKEND="Agg")
    src = ROOT / "src"
    if any(p.suffix in {".so", ".pyd"} for p in (src / "hetmtl").glob("_core*")):  # a ``make dev`` tree
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, f"{name}.py"], cwd=VIGNETTE_DIR, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"vignette {name} failed (exit {proc.returncode}); nothing recorded")
    import hetmtl

    header = [
        f"# vignette: vignettes/python/{name}.py",
        f"# source sha256: {vignette_sha256(name)}",
        f"# recorded: {datetime.now(timezone.utc):%Y-%m-%d} UTC, hetmtl {hetmtl.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, {seconds:.0f} s wall clock",
    ]
    body = proc.stdout.rstrip("\n")
    # warnings name the vignette by its path: keep it relative to the repository
    stderr = proc.stderr.replace(str(VIGNETTE_DIR) + os.sep, "vignettes/python/")
    warnings = [line for line in stderr.splitlines() if line.strip()]
    if warnings:
        body += "\n\n# stderr:\n" + "\n".join(warnings)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / f"{name}.txt").write_text("\n".join(header) + "\n\n" + body + "\n", encoding="utf-8")
    return seconds


def main(argv: list[str]) -> None:
    names = argv or list(VIGNETTES)
    unknown = [n for n in names if n not in VIGNETTES]
    if unknown:
        raise SystemExit(f"unknown vignette(s) {unknown}; choose from {list(VIGNETTES)}")
    for name in names:
        print(f"{name}: {record(name):.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
