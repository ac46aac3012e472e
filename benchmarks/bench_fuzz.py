"""Fuzz suite, long profile: hostile input at every public entry point (issue #25).

Run: PYTHONPATH=src python benchmarks/bench_fuzz.py [SCALE]  (writes benchmarks/results/fuzz.md)

Runs ``tests/test_fuzz.py`` with ``HETMTL_FUZZ_PROFILE=long`` (``SCALE`` times the CI profile's
examples per entry point, default 10, fresh randomness) and ``HETMTL_FUZZ_RECORD`` (every case is
classified and counted instead of stopping at the first bad one), then writes the case count and
the outcome table by component: clean error (a documented hetmtl exception; CLI: exit 1 or 2 with
one stderr line) / finite result (finite estimates, predictions and a trained model) / anything
else (a raw third-party exception, silent NaN/inf, an untrained model, a CLI traceback), with the
distinct "anything else" cases, the hetmtl source line they came from and its owner.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fuzz.md"
COMPONENT_ORDER = ["containers", "SiteDML", "MultiSiteDML", "LateFusion", "summary JSON readers", "model exports",
                   "MBI", "block-wise (MTLHMB)", "block-wise (STL)", "block-wise (HTL)", "block-wise (HPS)",
                   "dual encoder", "CLI", "study runner"]


def split_detail(detail: str) -> tuple[str, str, str]:
    """(what happened, hetmtl source line, example) of a recorded failure
    ``"what (at file:line) [example]"`` (or ``"what [example]"``)."""
    m = re.match(r"^(.*) \(at ([^()]*)\) \[(.*)\]$", detail, re.S)
    if m:
        return m.group(1), m.group(2), m.group(3)
    m = re.match(r"^(.*?) \[(.*)\]$", detail, re.S)
    return (m.group(1), "-", m.group(2)) if m else (detail, "-", "")


def owner(at: str) -> str:
    """Which part of the code base a failure belongs to (from its hetmtl source line)."""
    for prefix, who in [("encoders/", "encoders"), ("blockwise/mbi.py", "MBI"), ("blockwise/_r_bridge", "MBI"),
                        ("blockwise/", "block-wise"), ("latefusion/", "late fusion"), ("data/", "late fusion (data)"),
                        ("inference/", "late fusion (inference)"), ("rinterop", "R interop"),
                        ("_validation", "shared validation layer"), ("studies/", "study runner"), ("cli.py", "CLI"),
                        ("serialization", "serialization"), ("_jsonio", "serialization")]:
        if at.startswith(prefix):
            return who
    return at


def fallback_owner(component: str, example: str) -> str:
    """Owner of a failure without a hetmtl source line (a silent NaN/inf or untrained model)."""
    if component == "fitted-model calls":
        component = {"dual": "dual encoder", "mtlhmb": "block-wise", "mbi": "MBI", "sitedml": "SiteDML"}.get(
            example.split(".", 1)[0], component)
    for key, who in [("containers", "late fusion (data)"), ("SiteDML", "late fusion"), ("MultiSiteDML", "late fusion"),
                     ("LateFusion", "late fusion"), ("summary", "late fusion"), ("model exports", "serialization"),
                     ("MBI", "MBI"), ("block-wise", "block-wise"), ("dual encoder", "encoders"), ("CLI", "CLI"),
                     ("study runner", "study runner")]:
        if component.startswith(key):
            return who
    return "-"


def main(scale: int = 10) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "fuzz.json"
        env = {**os.environ, "HETMTL_FUZZ_PROFILE": "long", "HETMTL_FUZZ_SCALE": str(scale),
               "HETMTL_FUZZ_RECORD": str(record), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if not record.exists():
            sys.exit(f"the fuzz suite recorded nothing:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        data = json.loads(record.read_text())
    counts, details = data["counts"], data["details"]
    comps = [c for c in COMPONENT_ORDER if c in counts] + sorted(c for c in counts if c not in COMPONENT_ORDER)
    cols = ["clean error", "finite result", "anything else"]
    total = Counter()
    rows = []
    for c in comps:
        v = [counts[c].get(k, 0) for k in cols]
        total.update(dict(zip(cols, v)))
        rows.append(f"| {c} | {sum(v)} | " + " | ".join(map(str, v)) + " |")
    n = sum(total.values())
    lines = [
        "# Fuzz suite (hostile input at every public entry point)", "",
        f"`PYTHONPATH=src python benchmarks/bench_fuzz.py {scale}`: `tests/test_fuzz.py` with the long profile "
        f"({scale} x the CI examples, fresh randomness), every case classified instead of stopping at the first "
        f"bad one. {n} cases in {seconds:.0f} s (pytest exit code {proc.returncode}).", "",
        "Outcomes: *clean error* = a documented hetmtl exception (HetmtlError and subclasses, NotFittedError) "
        "with a message, for the CLI exit code 1 or 2 with one stderr line; *finite result* = finite estimates, "
        "standard errors and predictions from a model that trained; *anything else* = a raw third-party "
        "exception, KeyError/TypeError/AttributeError..., silent NaN/inf, an untrained model, a CLI traceback "
        "or internal error (the target is 0).", "",
        "| component | cases | clean error | finite result | anything else |", "|---|---:|---:|---:|---:|", *rows,
        f"| **total** | **{n}** | **{total['clean error']}** | **{total['finite result']}** | "
        f"**{total['anything else']}** |", "",
    ]
    if any(details.values()):
        lines += ["## Anything else: distinct cases", "",
                  "Grouped by exception type (or problem) and the hetmtl source line it came from, with that "
                  "file's owner, one message and one example.", ""]
        for c in comps:
            kinds: Counter = Counter()
            example: dict = {}
            for d in details.get(c, []):
                what, at, case = split_detail(d)
                key = (what.split(":", 1)[0], at)  # exception type (or problem) and source line
                kinds[key] += 1
                example.setdefault(key, (what[:160], case[:120]))
            if not kinds:
                continue
            lines.append(f"### {c}")
            lines.append("")
            for (kind, at), k in kinds.most_common():
                what, case = example[(kind, at)]
                who = owner(at) if at != "-" else fallback_owner(c, case)
                lines.append(f"- {k} x, `{at}` ({who}): `{what.replace('`', chr(39))}` "
                             f"(e.g. `{case.replace('`', chr(39))}`)")
            lines.append("")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
