"""Episode files: HDF5 in robomimic's layout, written atomically, read back with validation.

Layout (``dopa_format`` 1)::

    /                         attrs: env_name (dopa task, e.g. "lift"), env_kwargs (JSON of the
                                     make_env kwargs incl. controller), task_text, controller,
                                     views (JSON list), image_size, subtasks (JSON list),
                                     dopa_format = 1
    data/                     attrs: total (sum of num_samples), env_args (robomimic's JSON)
    data/demo_<i>/            attrs: seed, success (bool), keyframes (int64 [K]), keyframe_names
                                     (JSON list of K names), imperfection, num_samples = T
        obs/<view>_image      uint8   [T, H, W, 3]   obs[t] is the observation before action t
        obs/state             float32 [T, D]
        actions               float32 [T, A]
        rewards               float32 [T]
        dones                 uint8   [T]            1 on the last step
        final_obs/<view>_image uint8  [H, W, 3]      the observation after the last action
        final_obs/state       float32 [D]
        progress              float32 [T+1]          ground-truth progress of every frame

Frames are the T+1 observations (``obs`` then ``final_obs``). ``keyframes`` are frame indices in
[1, T], strictly increasing, at which each completed sub-task ended (K <= N sub-tasks).

A task the stack has no simulation for (``env_name`` not in :data:`sim.tasks.TASKS`: a
demonstration recorded elsewhere, :mod:`sim.importers`) needs only ``env_name``, ``views``,
``image_size`` and ``dopa_format`` at the root (``task_text`` when present; else the jobs' ``task=``
gives it; ``subtasks`` optional) and, per demo, ``success``, ``num_samples``, the images, ``actions``
and ``obs/state`` (either may be zero columns wide), ``rewards`` and ``dones``. For every task,
``keyframes``, ``keyframe_names``, ``imperfection`` (``"unknown"`` when absent), ``seed`` (-1) and
the ``progress`` dataset (ground truth; ``None`` when absent) are optional. Every demo of a file
has one state width.

Every dataset is chunked with HDF5's Fletcher-32 checksum, so a damaged chunk is an error on read,
never silently wrong numbers. Images are LZF-compressed. Files are written to a temporary name in
the destination folder and renamed into place when complete (``os.replace``), so a crash never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence

import h5py
import numpy as np

from basics.atomic import AtomicFile
from sim.tasks import IMPERFECTIONS, TASKS, TaskSpec

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

DOPA_FORMAT = 1


class EpisodeFileError(ValueError):
    """An episode file is unreadable, truncated, corrupt or inconsistent. The message names the
    file, the demo and the key."""


@dataclasses.dataclass
class Episode:
    """One recorded episode (T actions, T+1 frames).

    Attributes:
        frames: ``{view: uint8 [T+1, H, W, 3]}``.
        states: float32 ``[T+1, D]``.
        actions: float32 ``[T, A]`` in [-1, 1].
        rewards: float32 ``[T]``.
        dones: uint8 ``[T]``.
        progress: float32 ``[T+1]`` in [0, 1], ground truth from the physical state; ``None``
            when the file has none (a demonstration recorded elsewhere).
        keyframes: int64 ``[K]``, strictly increasing frame indices in [1, T].
        keyframe_names: the K completed sub-tasks' names.
        success: task success at the last frame.
        imperfection: ``"none" | "noise" | "stop" | "regress"``.
        seed: the env seed of the episode.
        task, task_text: dopa task name and its instruction.
        name: ``demo_<i>`` when read from a file.
        subtasks: the task's sub-task names as its file states them (``()``: not stated).
        frame_index: int64 ``[T+1]``: each frame's index in the stored episode (``stride`` > 1 picks
            a subset).
    """

    frames: dict[str, np.ndarray]
    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    progress: np.ndarray
    keyframes: np.ndarray
    keyframe_names: list[str]
    success: bool
    imperfection: str
    seed: int
    task: str = ""
    task_text: str = ""
    name: str = ""
    frame_index: np.ndarray | None = None
    subtasks: tuple[str, ...] = ()

    @property
    def num_steps(self) -> int:
        """T, the number of actions."""
        return int(self.actions.shape[0])

    @property
    def num_frames(self) -> int:
        """T + 1."""
        return int(self.states.shape[0])


def _fail(path, demo, key, msg) -> EpisodeFileError:
    where = f"{path}"
    if demo:
        where += f": {demo}"
    if key:
        where += f"/{key}"
    return EpisodeFileError(f"{where}: {msg}")


#: an episode's ``imperfection``: the scripted expert's kinds, or ``"unknown"`` (recorded elsewhere)
EPISODE_KINDS = (*IMPERFECTIONS, "unknown")


def check_episode(ep: Episode, views: Sequence[str], n_subtasks: int | None, where: str = "<episode>") -> None:
    """Check an episode's shapes, dtypes and values against one another (``n_subtasks`` None:
    any number of keyframes; ``ep.progress`` None: no ground truth).

    Raises:
        EpisodeFileError: naming ``where`` and the bad field (lengths, dtypes, NaN, keyframes,
            progress outside [0, 1], unknown imperfection, missing views).
    """
    def bad(key, msg):
        return _fail(where, ep.name, key, msg)

    T = ep.actions.shape[0] if ep.actions.ndim == 2 else -1
    if ep.actions.ndim != 2 or T < 1:
        raise bad("actions", f"must be [T, A] with T >= 1, got shape {ep.actions.shape}")
    checks = [("states", ep.states, 2, T + 1), ("rewards", ep.rewards, 1, T), ("dones", ep.dones, 1, T)]
    if ep.progress is not None:
        checks.append(("progress", ep.progress, 1, T + 1))
    for key, arr, ndim, length in checks:
        if arr.ndim != ndim or arr.shape[0] != length:
            raise bad(key, f"shape {arr.shape} is inconsistent with T={T} actions (expected {length} rows)")
    for key, arr in [("actions", ep.actions), ("states", ep.states), ("rewards", ep.rewards), ("progress", ep.progress)]:
        if arr is not None and not np.isfinite(arr).all():
            raise bad(key, "contains NaN or inf")
    if ep.progress is not None and (ep.progress.min() < 0.0 or ep.progress.max() > 1.0):
        raise bad("progress", f"values must lie in [0, 1], got [{ep.progress.min()}, {ep.progress.max()}]")
    missing = [v for v in views if v not in ep.frames]
    if missing:
        raise bad("obs", f"missing views {missing}; has {sorted(ep.frames)}")
    for v in views:
        f = ep.frames[v]
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[0] != T + 1 or f.shape[3] != 3:
            raise bad(f"obs/{v}_image", f"must be uint8 [T+1={T + 1}, H, W, 3] with obs and final_obs, "
                                        f"got {f.dtype} {f.shape}")
    kf = np.asarray(ep.keyframes)
    if kf.ndim != 1 or (kf.size and (not np.issubdtype(kf.dtype, np.integer))):
        raise bad("keyframes", f"must be a 1-D int array, got {kf.dtype} {kf.shape}")
    if n_subtasks is not None and kf.size > n_subtasks:
        raise bad("keyframes", f"{kf.size} keyframes for a task of {n_subtasks} sub-tasks")
    if kf.size and (kf.min() < 1 or kf.max() > T or np.any(np.diff(kf) <= 0)):
        raise bad("keyframes", f"must be strictly increasing frame indices in [1, {T}], got {kf.tolist()}")
    if len(ep.keyframe_names) != kf.size:
        raise bad("keyframe_names", f"{len(ep.keyframe_names)} names for {kf.size} keyframes")
    if ep.imperfection not in EPISODE_KINDS:
        raise bad("imperfection", f"unknown value {ep.imperfection!r}; known: {', '.join(EPISODE_KINDS)}")


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
class EpisodeWriter:
    """Write episodes of one task to ``path`` atomically (a temporary file, renamed on close).

    Usage::

        with EpisodeWriter("data/lift.hdf5", "lift", env_kwargs, views=("front",), image_size=64) as w:
            w.add(episode)
        # the file exists under its final name only now; an exception inside the block removes the
        # temporary file and leaves any older file at ``path`` untouched.

    Args:
        path: destination ``.hdf5`` path; its folder is created if missing.
        task: dopa task name (``sim.TASKS``), or the name of a task the stack has no simulation
            for (then ``task_text`` is required and views may have any names).
        env_kwargs: the ``sim.make_env`` kwargs (JSON-serialisable; include ``controller``).
        views: stored camera views (may be empty).
        image_size: pixels per side of stored views.
        task_text: the task's instruction (default: the registered task's text).
        subtasks: the task's sub-task names (default: the registered task's; ``()`` for another task).
    Raises:
        ValueError: unknown view of a registered task, a task name or view name that is not a
            plain word (letters, digits, ``-``, ``_``, ``.``), an empty task text for another task,
            non-serialisable env_kwargs.
    """

    def __init__(self, path, task: str, env_kwargs: dict, views: Sequence[str], image_size: int,
                 task_text: str | None = None, subtasks: Sequence[str] | None = None):
        self.spec = TASKS.get(task)
        self.views = tuple(views)
        if self.spec is None:
            for what, name in [("task name", task), *(("view name", v) for v in self.views)]:
                if not isinstance(name, str) or not _WORD.fullmatch(name):
                    raise ValueError(f"{what} {name!r} must be a plain word (letters, digits, '-', '_', '.')")
            if not isinstance(task_text, str) or not task_text.strip():
                raise ValueError(f"task {task!r} is not a simulation task (dopa tasks): give its task text")
            self.spec = TaskSpec(task, "external", ("", ""), task_text.strip(), {v: v for v in self.views}, 0,
                                 subtasks=tuple(subtasks or ()))
        elif task_text is not None or subtasks is not None:
            self.spec = dataclasses.replace(self.spec, text=str(task_text or self.spec.text).strip(),
                                            subtasks=tuple(self.spec.subtasks if subtasks is None else subtasks))
        for v in self.views:
            if v not in self.spec.cameras:
                raise ValueError(f"unknown view {v!r} for task {task!r}; known: {', '.join(self.spec.cameras)}")
        self.path = os.fspath(path)
        self.task = task
        self.image_size = int(image_size)
        self.env_kwargs = dict(env_kwargs)
        try:
            self._env_kwargs_json = json.dumps(self.env_kwargs, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"env_kwargs must be JSON-serialisable: {exc}") from None
        self._file = AtomicFile(self.path, ".hdf5")  # renamed onto path by close(), removed by abort()
        self.tmp_path = self._file.tmp
        self._h5: h5py.File | None = None
        self.count = 0
        self.total = 0
        try:  # an interrupt (Ctrl-C, SIGTERM) before the caller's ``with`` starts leaves no temporary
            self._h5 = h5py.File(self.tmp_path, "w")
            self._data = self._h5.create_group("data")
            self._write_file_attrs()
        except BaseException:
            self.abort()
            raise

    def _write_file_attrs(self) -> None:
        a = self._h5.attrs
        a["env_name"] = self.task
        a["env_kwargs"] = self._env_kwargs_json
        a["task_text"] = self.spec.text
        a["controller"] = str(self.env_kwargs.get("controller", "osc_pose"))
        a["views"] = json.dumps(list(self.views))
        a["image_size"] = self.image_size
        a["subtasks"] = json.dumps(list(self.spec.subtasks))
        a["dopa_format"] = DOPA_FORMAT
        # robomimic reads data.attrs["env_args"]
        self._data.attrs["env_args"] = json.dumps({"env_name": self.task, "type": "dopa",
                                                   "env_kwargs": self.env_kwargs})

    def _dataset(self, group, name, arr, image=False):
        arr = np.ascontiguousarray(arr)
        if arr.ndim == 0 or arr.size == 0:
            return group.create_dataset(name, data=arr)
        chunks = (1,) + arr.shape[1:] if image and arr.ndim == 4 else True
        return group.create_dataset(name, data=arr, chunks=chunks, fletcher32=True,
                                    compression="lzf" if image else None)

    def add(self, ep: Episode) -> str:
        """Append one episode as ``demo_<i>``; returns that name.

        Raises:
            EpisodeFileError: the episode is inconsistent (see :func:`check_episode`).
            RuntimeError: the writer is closed.
        """
        if self._h5 is None:
            raise RuntimeError("EpisodeWriter is closed")
        name = f"demo_{self.count}"
        external = self.spec.family == "external" and not self.spec.subtasks
        check_episode(ep, self.views, None if external else len(self.spec.subtasks),
                      where=f"episode for {self.path}")
        for v in self.views:
            if ep.frames[v].shape[1:3] != (self.image_size, self.image_size):
                raise _fail(self.path, name, f"obs/{v}_image",
                            f"frames are {ep.frames[v].shape[1:3]}, file image_size is {self.image_size}")
        T = ep.num_steps
        g = self._data.create_group(name)
        obs, fin = g.create_group("obs"), g.create_group("final_obs")
        for v in self.views:
            frames = np.asarray(ep.frames[v], dtype=np.uint8)
            self._dataset(obs, f"{v}_image", frames[:T], image=True)
            self._dataset(fin, f"{v}_image", frames[T])
        states = np.asarray(ep.states, dtype=np.float32)
        self._dataset(obs, "state", states[:T])
        self._dataset(fin, "state", states[T])
        self._dataset(g, "actions", np.asarray(ep.actions, dtype=np.float32))
        self._dataset(g, "rewards", np.asarray(ep.rewards, dtype=np.float32))
        self._dataset(g, "dones", np.asarray(ep.dones, dtype=np.uint8))
        if ep.progress is not None:
            self._dataset(g, "progress", np.asarray(ep.progress, dtype=np.float32))
        a = g.attrs
        a["seed"] = int(ep.seed)
        a["success"] = bool(ep.success)
        a["keyframes"] = np.asarray(ep.keyframes, dtype=np.int64)
        a["keyframe_names"] = json.dumps(list(ep.keyframe_names))
        a["imperfection"] = ep.imperfection
        a["num_samples"] = T
        self.count += 1
        self.total += T
        return name

    def close(self) -> str:
        """Finish the file and move it to its final name. Returns the final path."""
        if self._h5 is None:
            return self.path
        try:
            self._data.attrs["total"] = self.total
            self._h5.attrs["num_demos"] = self.count
            self._h5.flush()
            self._h5.close()
            self._h5 = None
            self._file.commit()
        except BaseException:  # an interrupt while finishing leaves no temporary file behind
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written; the final path is not touched."""
        if self._h5 is not None:
            try:
                self._h5.close()
            finally:
                self._h5 = None
        self._file.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def _demo_sort_key(name: str):
    tail = name.rsplit("_", 1)[-1]
    return (0, int(tail)) if tail.isdigit() else (1, name)


class EpisodeFile:
    """A validated episode file, opened read-only.

    Opening checks the file attributes and the presence, shapes and dtypes of every demo's
    datasets (without reading images); :meth:`read` then loads and checks values.

    Attributes:
        path, task, task_text, controller, env_kwargs (dict), views (tuple), image_size,
        subtasks (tuple), demos (list of ``demo_<i>`` names in index order).
    Raises:
        FileNotFoundError: no file at ``path``.
        EpisodeFileError: not HDF5, an HDF5 file that is no episode file (no ``data`` group and no
            ``env_name``), truncated, corrupt, missing keys or attributes, inconsistent lengths; the
            message names the path, demo and key.
    """

    REQUIRED_ATTRS = ("env_name", "views", "image_size", "dopa_format")
    SIM_ATTRS = ("env_kwargs", "task_text", "controller")  # required of a simulation task's file
    DEMO_ATTRS = ("success", "num_samples")

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no episode file at {self.path}")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            size = os.path.getsize(self.path)
            raise EpisodeFileError(f"{self.path}: not a readable HDF5 episode file ({size} bytes; "
                                   f"truncated or corrupt?): {exc}") from None
        try:
            self._load_header()
            for name in self.demos:
                self._check_layout(name)
        except BaseException:
            self._h5.close()
            raise

    # -- header ---------------------------------------------------------------------------------
    def _attr(self, obj, key, demo=""):
        try:
            value = obj.attrs[key]
        except KeyError:
            raise _fail(self.path, demo, f"@{key}", "missing attribute") from None
        except OSError as exc:
            raise _fail(self.path, demo, f"@{key}", f"unreadable attribute ({exc})") from None
        return value.decode() if isinstance(value, bytes) else value

    def _load_header(self) -> None:
        h = self._h5
        if "data" not in h and "env_name" not in h.attrs:  # some other HDF5 file, not a damaged episode file
            raise EpisodeFileError(f"{self.path} is an HDF5 file but not a dopa/robomimic episode file (no data "
                                   "group, no env_name attribute); episode files come from dopa demos")
        for key in self.REQUIRED_ATTRS:
            self._attr(h, key)
        fmt = int(self._attr(h, "dopa_format"))
        if fmt != DOPA_FORMAT:
            raise _fail(self.path, "", "@dopa_format", f"is {fmt}; this reader reads format {DOPA_FORMAT}")

        self.task = str(self._attr(h, "env_name"))
        spec = TASKS.get(self.task)  # None: a task the stack has no simulation for (sim.importers)
        self.simulated = spec is not None
        if spec is not None:
            for key in self.SIM_ATTRS:
                self._attr(h, key)
        elif not self.task.strip():
            raise _fail(self.path, "", "@env_name", "is empty; it names the task")
        self.task_text = str(self._attr(h, "task_text")) if "task_text" in h.attrs else ""
        self.controller = str(self._attr(h, "controller")) if "controller" in h.attrs else ""
        try:
            self.env_kwargs = json.loads(self._attr(h, "env_kwargs")) if "env_kwargs" in h.attrs else {}
            self.views = tuple(json.loads(self._attr(h, "views")))
            subtasks = h.attrs.get("subtasks")
            self.subtasks = (tuple(json.loads(subtasks)) if subtasks is not None
                             else spec.subtasks if spec is not None else ())
        except (json.JSONDecodeError, TypeError) as exc:
            raise _fail(self.path, "", "@env_kwargs/@views", f"not valid JSON ({exc})") from None
        self.image_size = int(self._attr(h, "image_size"))
        if "data" not in h:
            raise _fail(self.path, "", "data", "missing group")
        self.demos = sorted((k for k in h["data"].keys()), key=_demo_sort_key)
        self._state_width: tuple[str, int] | None = None  # (first demo, its width): one width per file

    def _get(self, demo: str, key: str):
        g = self._h5["data"][demo]
        try:
            return g[key]
        except KeyError:
            raise _fail(self.path, demo, key, "missing") from None
        except OSError as exc:
            raise _fail(self.path, demo, key, f"unreadable ({exc})") from None

    def _check_layout(self, demo: str) -> None:
        for key in self.DEMO_ATTRS:
            self._attr(self._h5["data"][demo], key, demo)
        actions = self._get(demo, "actions")
        if actions.ndim != 2:
            raise _fail(self.path, demo, "actions", f"must be [T, A], got shape {actions.shape}")
        T = actions.shape[0]
        n = int(self._attr(self._h5["data"][demo], "num_samples", demo))
        if n != T:
            raise _fail(self.path, demo, "@num_samples", f"is {n} but actions has {T} rows")
        S = self.image_size
        expected = {"obs/state": (T, None), "rewards": (T,), "dones": (T,), "final_obs/state": (None,)}
        if "progress" in self._h5["data"][demo]:
            expected["progress"] = (T + 1,)
        for v in self.views:
            expected[f"obs/{v}_image"] = (T, S, S, 3)
            expected[f"final_obs/{v}_image"] = (S, S, 3)
        for key, shape in expected.items():
            ds = self._get(demo, key)
            if len(ds.shape) != len(shape) or any(e is not None and e != s for e, s in zip(shape, ds.shape, strict=True)):
                want = tuple("D" if e is None else e for e in shape)
                raise _fail(self.path, demo, key, f"shape {ds.shape} is inconsistent with T={T} "
                                                  f"(expected {want})")
            if key.endswith("_image") and ds.dtype != np.uint8:
                raise _fail(self.path, demo, key, f"dtype {ds.dtype}, expected uint8")
        width = self._get(demo, "obs/state").shape[1]
        if self._get(demo, "final_obs/state").shape[0] != width:
            raise _fail(self.path, demo, "final_obs/state", "state size differs from obs/state")
        if self._state_width is None:
            self._state_width = (demo, int(width))
        elif self._state_width[1] != width:
            first, w0 = self._state_width
            raise _fail(self.path, demo, "obs/state", f"states are {width} wide but {first}'s are {w0}: every "
                                                      "episode of a file must have one state width")

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.demos)

    def __iter__(self) -> Iterator[Episode]:
        for name in self.demos:
            yield self.read(name)

    def _demo_name(self, demo) -> str:
        if isinstance(demo, (int, np.integer)) and not isinstance(demo, bool):
            if not 0 <= int(demo) < len(self.demos):
                raise IndexError(f"{self.path}: demo index {demo} out of range [0, {len(self.demos)})")
            return self.demos[int(demo)]
        if demo not in self.demos:
            shown = ", ".join(self.demos[:5]) + (", ..." if len(self.demos) > 5 else "")
            raise KeyError(f"{self.path}: no demo {demo!r}; has {len(self.demos)}: {shown}")
        return str(demo)

    def check_views(self, views=None) -> tuple[str, ...]:
        """``views`` (a name, a sequence, or ``None`` for all stored) as a tuple of stored views.

        Raises:
            ValueError: a view this file does not store (lists the stored ones).
        """
        views = self.views if views is None else ((views,) if isinstance(views, str) else tuple(views))
        for v in views:
            if v not in self.views:
                raise ValueError(f"{self.path}: unknown view {v!r}; stored views: {', '.join(self.views) or '(none)'}")
        return views

    def _read(self, demo: str, key: str) -> np.ndarray:
        ds = self._get(demo, key)
        try:
            return ds[()]
        except OSError as exc:  # checksum or decompression failure: a damaged chunk
            raise _fail(self.path, demo, key, f"corrupt data ({exc})") from None

    def read(self, demo, views=None, stride: int = 1) -> Episode:
        """Load one episode (by name ``demo_<i>`` or position), optionally fewer views and frames.

        Args:
            demo: ``"demo_<i>"`` or an int position in :attr:`demos`.
            views: views to load (default: all stored; ``()`` for none).
            stride: keep every ``stride``-th frame plus always the final one. Then ``actions`` are
                the actions taken at the kept frames (rows ``frame_index[:-1]``), ``rewards`` are
                summed and ``dones`` or-ed over each interval, keyframes map to the first kept frame
                at or after them.
        Returns:
            :class:`Episode`.
        Raises:
            ValueError: unknown view (lists the stored ones); stride < 1, or a stride so large that
                two keyframes map to one kept frame.
            KeyError / IndexError: unknown demo.
            EpisodeFileError: corrupt or inconsistent data.
        """
        name = self._demo_name(demo)
        views = self.check_views(views)
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        g = self._h5["data"][name]
        frames = {v: np.concatenate([self._read(name, f"obs/{v}_image"),
                                     self._read(name, f"final_obs/{v}_image")[None]]) for v in views}
        states = np.concatenate([self._read(name, "obs/state"), self._read(name, "final_obs/state")[None]])
        try:
            names = json.loads(self._attr(g, "keyframe_names", name)) if "keyframe_names" in g.attrs else []
        except json.JSONDecodeError as exc:
            raise _fail(self.path, name, "@keyframe_names", f"not valid JSON ({exc})") from None
        keyframes = self._attr(g, "keyframes", name) if "keyframes" in g.attrs else np.zeros(0, np.int64)
        ep = Episode(
            frames=frames, states=states, actions=self._read(name, "actions"),
            rewards=self._read(name, "rewards"), dones=self._read(name, "dones"),
            progress=self._read(name, "progress") if "progress" in g else None,
            keyframes=np.asarray(keyframes, dtype=np.int64).reshape(-1),
            keyframe_names=list(names), success=bool(self._attr(g, "success", name)),
            imperfection=str(self._attr(g, "imperfection", name)) if "imperfection" in g.attrs else "unknown",
            seed=int(self._attr(g, "seed", name)) if "seed" in g.attrs else -1,
            task=self.task, task_text=self.task_text, name=name, subtasks=tuple(self.subtasks))
        ep.frame_index = np.arange(ep.num_frames, dtype=np.int64)
        n_sub = len(self.subtasks) if (self.simulated or self.subtasks) else None
        check_episode(ep, views, n_sub, where=self.path)
        return subsample(ep, stride) if stride > 1 else ep

    def close(self) -> None:
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def subsample(ep: Episode, stride: int) -> Episode:
    """Keep frames ``0, stride, 2*stride, ...`` and always the final frame (see :meth:`EpisodeFile.read`).

    Raises:
        ValueError: two keyframes would land on the same kept frame (lists them and the stride).
    """
    T = ep.num_steps
    idx = np.arange(0, T + 1, stride, dtype=np.int64)
    if idx[-1] != T:
        idx = np.append(idx, T)
    kf = np.searchsorted(idx, np.asarray(ep.keyframes, dtype=np.int64), side="left").astype(np.int64)
    if kf.size and np.any(np.diff(kf) <= 0):
        raise ValueError(f"{ep.name or 'episode'}: stride {stride} merges keyframes {np.asarray(ep.keyframes).tolist()} "
                         f"into frames {kf.tolist()}; use a stride below the smallest keyframe gap")
    starts, ends = idx[:-1], idx[1:]
    rewards = np.add.reduceat(ep.rewards, starts).astype(np.float32)
    dones = np.maximum.reduceat(ep.dones, starts).astype(np.uint8)
    assert rewards.shape[0] == ends.shape[0]
    base = ep.frame_index if ep.frame_index is not None else np.arange(T + 1)
    return dataclasses.replace(
        ep, frames={v: f[idx] for v, f in ep.frames.items()}, states=ep.states[idx], actions=ep.actions[starts],
        rewards=rewards, dones=dones, progress=None if ep.progress is None else ep.progress[idx], keyframes=kf,
        frame_index=base[idx])


def read_episodes(path, views=None, stride: int = 1, demos=None, image_size: int | None = None) -> list[Episode]:
    """Read and validate episodes from one episode file or several: THE episode reader (see
    :class:`EpisodeFile` and :meth:`EpisodeFile.read`).

    Args:
        path: an episode file, or a list of them (read in order, their episodes concatenated).
        views: views to load, each stored in every file (default: all stored; ``()``: states only,
            no image is read).
        stride: frame subsampling (final frame always kept).
        demos: names or positions to read in every file (default: all, in index order).
        image_size: when given, the loaded views must have this many pixels per side.
    Returns:
        list of :class:`Episode` (``frames[view]`` uint8 [T+1, H, W, 3], ``states`` float32 [T+1, D],
        ``actions`` float32 [T, A], T >= 1).
    Raises:
        FileNotFoundError: a missing file (all missing files named).
        ValueError: a view not stored in a file (lists the stored ones); frames of another size
            (``"<path>: frames are 32x32 px, expected 64x64"``); a bad stride.
        EpisodeFileError: an unreadable, corrupt or inconsistent file (names path, demo and key).
        KeyError / IndexError: an unknown demo.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    missing = [os.fspath(p) for p in paths if not os.path.exists(p)]
    if len(missing) == 1:
        raise FileNotFoundError(f"no episode file at {missing[0]}")
    if missing:
        raise FileNotFoundError(f"no episode files at {missing}")
    out: list[Episode] = []
    for p in paths:
        with EpisodeFile(p) as f:
            names = f.demos if demos is None else list(demos)
            loaded = f.check_views(views)
            if image_size is not None and loaded and f.image_size != image_size:
                raise ValueError(f"{f.path}: frames are {f.image_size}x{f.image_size} px, expected "
                                 f"{image_size}x{image_size}")
            out += [f.read(d, views=views, stride=stride) for d in names]
    return out
