"""File input/output shared by the site summaries, the model exports, the study files and the
CLI: checksummed JSON envelopes, atomic writes, and input files checked before they are opened."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def canonical_digest(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON (sorted keys, no whitespace, no NaN)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def regular_file(path: str | Path, what: str, error: type[Exception]) -> os.stat_result:
    """``os.stat`` of an existing regular file, checked before anything opens it (a FIFO would
    block, a device never end); each refusal raises ``error`` with a message naming the file and
    ``what`` it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, TypeError, ValueError) as exc:
        raise error(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file (FIFOs and devices are refused); the {what} must be a file")
    return st


def read_text_capped(path: str | Path, what: str, max_bytes: int, error: type[Exception]) -> str:
    """UTF-8 text of a regular file (:func:`regular_file`) of at most ``max_bytes`` bytes, checked
    before reading and while reading (a file growing after the check); refusals raise ``error``."""
    st = regular_file(path, what, error)
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes, more than the {max_bytes}-byte limit for a {what}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: more than the {max_bytes}-byte limit for a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, so a reader never
    sees half a file; on any failure the temporary file is removed and ``path`` is untouched.

    Raises
    ------
    OSError
        ``path`` is a directory or a special file, or cannot be written (the message names it).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise IsADirectoryError(f"{path}: {kind}; cannot write a file there") if kind == "a directory" else \
            OSError(f"{path}: {kind}; cannot write a file there")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{path}: the directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
