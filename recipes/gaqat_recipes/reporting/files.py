"""Writing report files safely: atomically (temp file + ``os.replace``) and under a per-folder lock.

Two sweeps that share an output folder both rebuild its report; the lock serialises them and the atomic
replace means a reader never sees a half-written ``results.md``, ``results.json``, PNG or ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, writes stay atomic
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".report.lock"
"""Name of the lock file a report writer holds in its folder."""


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary path)`` and move the result onto ``path`` in one step.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> write_atomic(target, lambda tmp: tmp.write_text("done")).read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically.

    Examples:
        >>> import tempfile
        >>> write_text_atomic(Path(tempfile.mkdtemp()) / "r.md", "| a |").read_text()
        '| a |'
    """
    return write_atomic(path, lambda temporary: temporary.write_text(text))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a ``.report.lock`` file in it) for the ``with`` block.

    Examples:
        >>> import tempfile
        >>> with folder_lock(tempfile.mkdtemp()):
        ...     pass
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
