"""Shared by ``conf.py`` and ``record_vignettes.py``: where the Python vignettes live and how a
recorded output is tied to the vignette source it came from."""
from __future__ import annotations

import hashlib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
VIGNETTE_DIR = ROOT / "vignettes" / "python"
OUTPUT_DIR = DOCS / "vignettes" / "_output"
#: The Python vignettes shown on the site, in page order.
VIGNETTES = ("latefusion", "encoders", "blockwise")


def vignette_sha256(name: str) -> str:
    """SHA-256 of a vignette's source together with the ``_check.py`` helper it imports."""
    h = hashlib.sha256()
    for f in (VIGNETTE_DIR / f"{name}.py", VIGNETTE_DIR / "_check.py"):
        h.update(f.read_bytes())
    return h.hexdigest()
