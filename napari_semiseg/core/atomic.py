"""Atomic file writes: a temporary file beside the destination, renamed over it when complete.

A crash, a kill or a full disk never leaves a half-written file under a name a reader looks
for. Every writer in the package (volumes, checkpoints, JSON sidecars, the project manifest and
annotations, the version index) goes through :func:`atomic_file`.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0o022)  # read once at import: os.umask can only be read by setting it
os.umask(_UMASK)


@contextmanager
def atomic_file(path: str | os.PathLike, durable: bool = False, keep_previous: Path | None = None,
                suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path`` in one rename.

    Args:
        path: the destination (its folder is created if missing).
        durable: fsync the file and its folder, so the new content survives a power cut.
        keep_previous: hard-link the old file here first, so at every moment one complete
            copy exists under a name a loader looks for.
        suffix: the temporary file's extension, for writers that choose a format by it
            (default: the destination's last suffix).

    The temporary file gets the permissions a plain ``open`` would give (mkstemp's are 0600). If
    the block raises, the destination is untouched and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix if suffix is None else suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)
        yield temporary
        if durable:
            _sync(temporary)
        if keep_previous is not None and path.exists():
            _replace_with_link(path, Path(keep_previous))
        os.replace(temporary, path)
        if durable:
            _sync(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_file(path, durable) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def _replace_with_link(source: Path, target: Path) -> None:
    staging = target.with_name(f".tmp-link-{os.getpid()}-{target.name}")
    if staging.exists():
        staging.unlink()
    try:
        os.link(source, staging)
    except OSError:  # file systems without hard links: a copy does the same job
        staging.write_bytes(source.read_bytes())
    os.replace(staging, target)


def _sync(path: Path) -> None:
    """fsync a file or a folder (folders: best effort, not every file system allows it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(descriptor)
