"""dnncost's per-user cache folder, and the one way a file is written into it.

The cache (``$DNNCOST_CACHE_DIR``, else ``$XDG_CACHE_HOME/dnncost``, ``~/.cache/dnncost``) holds
this machine's calibrations, the samples they were fitted on and the reference probe's fastest
time. Every writer goes through :func:`write_cache_file`: the bytes go to a temporary file beside
the target, which then replaces it (a reader never sees half a file), and a folder that cannot take
them -- read-only, full, a path through a file -- is one :class:`~dnncost.core.errors.OutputError`
naming the folder and what to do, with the temporary file removed.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from dnncost.core.errors import OutputError

CACHE_ENV = "DNNCOST_CACHE_DIR"  # source: our choice, the variable that moves the cache
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # source: errno(3), no room on the device or quota
_A_FILE_IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST)  # source: errno(3), a path part is not a folder


def cache_dir() -> Path:
    """dnncost's per-user cache: $DNNCOST_CACHE_DIR, else $XDG_CACHE_HOME/dnncost (~/.cache/dnncost)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dnncost"


def cache_unwritable(folder: Path, exc: OSError) -> OutputError:
    """The one wording of a cache folder that cannot be written: which folder, why, what to do."""
    why = exc.strerror or type(exc).__name__
    if exc.errno in _FULL:
        todo = f"free some space there or set {CACHE_ENV} to a folder on another disk"
    elif exc.errno in _A_FILE_IN_THE_WAY:
        todo = f"part of that path is a file; set {CACHE_ENV} to a folder"
    else:
        todo = f"make it writable or set {CACHE_ENV} to a writable folder"
    return OutputError(f"cannot write to dnncost's cache folder '{folder}' ({why}): {todo}")


def write_cache_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` in the cache atomically (a temporary file beside it, then a
    rename), creating its folder; OutputError (see :func:`cache_unwritable`) when the folder
    cannot take it, with nothing left behind."""
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"  # one per process: two writers never share it
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies
    except OSError as exc:
        raise cache_unwritable(folder, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except BaseException as exc:  # full, or interrupted while writing: no temporary file stays
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise cache_unwritable(folder, exc) from None
        raise
    return path


def check_cache_writable(folder: Path) -> None:
    """OutputError (see :func:`cache_unwritable`) unless a file can be created in ``folder``
    (made if missing): checked before minutes of measuring, not after. A full disk that still
    takes an empty file is caught by :func:`write_cache_file` when the results are written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".writable.{os.getpid()}.tmp"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        os.unlink(tmp)
    except OSError as exc:
        raise cache_unwritable(folder, exc) from None


__all__ = ["CACHE_ENV", "cache_dir", "cache_unwritable", "check_cache_writable", "write_cache_file"]
