"""A run's files are written whole or not at all (atomic_write), and a refused write is said in
words a user can act on (os_error_reason). Standard library only."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once, at import: os.umask can only be read by setting it


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all: the ``with`` body writes into a temporary file in the
    same directory, which is then flushed, fsynced and renamed over ``path``.

    The same directory matters: a rename within one filesystem is atomic, while a temporary file
    in ``$TMPDIR`` (Lightning's and fsspec's way) may sit on another filesystem (a tmpfs /tmp),
    where the "move" is a copy that a kill or a full disk leaves half done. On any error, in the
    body or in the write, the temporary file is removed, ``path`` keeps its previous content, and
    the error propagates. A SIGKILL can leave a ``.<name>.*.tmp`` behind, never a partial
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)  # reopened by name: the writer's file object then knows its path
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a checkpoint is shared like any other file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    # The rename itself is on disk only once its directory is: without this, a power cut right
    # after a save could bring back the previous file (never a partial one).
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename still happened
        pass
    finally:
        os.close(fd)


def os_error_reason(err: OSError) -> str:
    """Why the operating system refused a write, in words a user can act on."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full (or your quota is used up)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "the filesystem is read-only"
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{_first_file(err.filename) or 'a part of the path'} is a file, not a directory"
    return err.strerror or str(err)


def _first_file(path: str | None) -> Path | None:
    """The part of ``path`` that exists and is not a directory (a file where a folder should be)."""
    if not path:
        return None
    for part in reversed([Path(path), *Path(path).parents]):
        if part.exists() and not part.is_dir():
            return part
    return Path(path)
