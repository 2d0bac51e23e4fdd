"""Atomic writes: a file or folder appears under its final name only once it is complete.

Every checkpoint, policy folder and result file in dopa is written through here (or through
``os.replace`` of a temporary file in the same folder), so an interrupted run never leaves a
half-written artefact under the final name.

Temporaries are named ``.<name>.tmp-<pid>-<random>[suffix]`` (a replaced folder, moved aside
for a moment, ``.<name>.old-<pid>-<random>``), so the writer's process id is in the name. A
process killed with ``kill -9`` cannot clean up; the next atomic write into the same folder (in
any process; once per folder and process) removes the temporaries of processes that no longer
run and logs one line saying so (:func:`remove_stale_temporaries`). Temporaries of running
processes are never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask (os.umask sets and returns it), then put it back
os.umask(_UMASK)

log = logging.getLogger(__name__)

#: ``.<name>.tmp-<pid>-<random>[suffix]`` / ``.<name>.old-<pid>-<random>`` (tempfile's 8 random characters).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[a-z0-9_]{8}(?:\..*)?$")
_SWEPT: set[tuple[int, str]] = set()  # (pid, folder) already swept: once per folder and process


def _prefix(name: str, kind: str = "tmp") -> str:
    """A temporary's name prefix carrying this process's id (``.<name>.<kind>-<pid>-``)."""
    return f".{name}.{kind}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie on this machine (``os.kill(pid, 0)``, then
    ``/proc/<pid>/stat`` where there is one). A process that may exist (no permission to signal
    it, an unexpected error) counts as alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries (:data:`_TEMPORARY` names) that processes no longer running left in
    ``folder`` (e.g. after ``kill -9``), logging one line (WARNING) naming them.

    A temporary of a dead writer is removed. A replaced folder moved aside (``.old-``) is removed
    when its final name exists, else renamed back to it (the writer died between moving the old
    folder aside and renaming the new one in, so the old one is the last complete version).
    Temporaries of this process and of running processes are left alone; names without a pid
    (written by older versions) are not judged.

    Returns:
        The names removed or restored.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    done = []
    for e in entries:
        m = _TEMPORARY.match(e.name)
        if m is None or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        final = folder / m["name"]
        try:
            if m["kind"] == "old" and not final.exists():
                os.replace(e.path, final)
                done.append(f"{e.name} (restored as {final.name})")
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.remove(e.path)
            done.append(e.name)
        except OSError:  # another process cleaned it first, or no permission: leave it
            continue
    if done:
        log.warning("removed %d temporary file(s) left in %s by processes that no longer run: %s",
                    len(done), folder, ", ".join(done))
    return done


def _sweep(folder: Path) -> None:
    """:func:`remove_stale_temporaries` once per folder and process."""
    key = (os.getpid(), str(folder.resolve()))
    if key not in _SWEPT:
        _SWEPT.add(key)
        remove_stale_temporaries(folder)


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
    _sweep(path.parent)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / marker).exists())):
        kind = "a file" if not path.is_dir() else f"a folder without {marker}"
        raise FileExistsError(f"{path} exists and is {kind}; refusing to replace it (choose another output path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path.name), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the result gets a new folder's usual mode
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_prefix(path.name, "old"), dir=path.parent))
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
        _sweep(self.path.parent)
        fd, self.tmp = tempfile.mkstemp(prefix=_prefix(self.path.name), suffix=suffix, dir=self.path.parent)
        try:
            os.close(fd)
            os.chmod(self.tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result gets a new file's usual mode
        except BaseException:  # an interrupt here: the caller never got the temporary to discard
            self.discard()
            raise

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


def atomic_symlink(path: str | os.PathLike, target: str) -> Path:
    """Point the symbolic link ``path`` at ``target`` atomically: a link is made under a temporary
    name beside ``path`` and renamed onto it (``os.replace`` replaces an existing link, never what it
    points to), so a reader sees the old target or the new one, never no link.

    Args:
        path: the link (its parent folder must exist).  target: what it points to, stored as given
            (give a name relative to the link's folder so that a copied folder keeps working).
    Returns:
        The link's path.
    Raises:
        IsADirectoryError: ``path`` is a real folder (not a link).
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a link; refusing to replace it with a link")
    _sweep(path.parent)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"
    while True:
        tmp = path.parent / (_prefix(path.name) + "".join(secrets.choice(alphabet) for _ in range(8)))
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


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
