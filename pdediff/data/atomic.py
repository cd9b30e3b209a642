"""Atomic file writes: write under a temporary name in the same folder, fsync, then rename.

``os.replace`` within one folder is atomic on POSIX, so a reader sees either the old file or
the complete new one, never a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries to disk so that a rename inside it survives a crash."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def commit(tmp_path: str | os.PathLike, final_path: str | os.PathLike) -> Path:
    """Fsync ``tmp_path`` and atomically rename it to ``final_path`` (same folder).

    Returns:
        The final path.
    """
    with open(tmp_path, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_path, final_path)
    fsync_dir(Path(final_path).parent)
    return Path(final_path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; on success commit it to ``path``.

    The body writes the file at the yielded path (with any library). If the body raises,
    the temporary file is removed and ``path`` is left untouched.

    Example:
        >>> with atomic_path("card.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    final = Path(path)
    tmp = final.with_name(f"{final.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
