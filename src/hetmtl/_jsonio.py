"""Checksummed JSON envelopes shared by the site summaries and the model exports."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_digest(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON (sorted keys, no whitespace, no NaN)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
