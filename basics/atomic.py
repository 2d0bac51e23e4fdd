"""Atomic writes: a file or folder appears under its final name only once it is complete.

Every checkpoint, policy folder and result file in dopa is written through here (or through
``os.replace`` of a temporary file in the same folder), so an interrupted run never leaves a
half-written artefact under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask (os.umask sets and returns it), then put it back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Build a folder in a temporary folder beside ``path``; rename it into place on success.

    An existing folder at ``path`` is replaced only if it is empty or of the same kind (it holds
    the file or folder ``marker``, e.g. ``"config.json"``), and only once the new one is complete
    (it is moved aside, the new one renamed in, then the old one deleted). On any exception the
    temporary folder is removed and ``path`` is left as it was.

    Yields:
        The temporary folder (``Path``) to write into.
    Raises:
        FileExistsError: ``path`` exists and is a file, or a non-empty folder without ``marker``
            (never overwrite what this writer did not make).
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / marker).exists())):
        kind = "a file" if not path.is_dir() else f"a folder without {marker}"
        raise FileExistsError(f"{path} exists and is {kind}; refusing to replace it (choose another output path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the result gets a new folder's usual mode
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class AtomicFile:
    """A temporary file beside ``path`` (missing parent folders created) that becomes ``path`` only
    on :meth:`commit`; :meth:`discard` removes it and leaves ``path`` as it was. For writers that
    stay open across calls (``sim.episodes.EpisodeWriter``); a block of code uses :func:`atomic_file`.

    Attributes:
        path: the final path (``Path``).  tmp: the temporary file's name (``str``), created empty.
    """

    def __init__(self, path: str | os.PathLike, suffix: str = ".tmp"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=suffix, dir=self.path.parent)
        os.close(fd)
        os.chmod(self.tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result gets a new file's usual mode

    def commit(self) -> Path:
        """Rename the temporary file onto ``path`` (``os.replace``: atomic on one file system)."""
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if it is still there); ``path`` is not touched."""
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary file name beside ``path`` (missing parent folders created), renamed onto
    ``path`` when the block succeeds and removed when it fails (:class:`AtomicFile`).

    Yields:
        The temporary file's name (``str``; the file exists, empty) to write to.
    """
    f = AtomicFile(path, suffix)
    try:
        yield f.tmp
        f.commit()
    except BaseException:
        f.discard()
        raise


def check_json_path(path, key: str | None = None) -> Path:
    """``path`` as a file path for a JSON result (not an existing folder); ``key`` names the config
    key in the message. Returns the path.

    Raises:
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        what = f"{key}={str(path)!r}" if key else str(path)
        raise IsADirectoryError(f"{what} is a folder; give a file path for the JSON result")
    return path


def write_json(path, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (a temp file in the same folder, then
    ``os.replace``), creating missing parent folders. Returns the path.

    Raises:
        FileExistsError / NotADirectoryError: a parent of ``path`` is a file. IsADirectoryError:
            ``path`` is a folder.
    """
    path = check_json_path(path)
    with atomic_file(path, ".tmp") as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2))
    return path
