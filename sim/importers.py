"""Importers: demonstrations recorded elsewhere as the stack's episode files (``dopa import``).

Three sources, each written with :class:`sim.episodes.EpisodeWriter` (atomically: a temporary file
renamed into place only when every episode was read and checked):

- :func:`import_robomimic`: a robomimic HDF5 file (``data/demo_<i>/obs/<image key>`` uint8
  [T, H, W, 3], ``actions`` [T, A], ``rewards``, ``dones``; the last observation from
  ``next_obs``; a file without it gives T frames and the first T - 1 actions). Image keys map to
  view names (``{"front": "agentview_image", "wrist": "robot0_eye_in_hand_image"}``); the low-dimensional ``obs`` keys, concatenated in name order,
  are the state; success is ``dones[-1]`` or a positive reward.
- :func:`import_lerobot`: a LeRobot dataset folder, format v3.0, read locally (``meta/info.json``,
  ``meta/episodes/*/*.parquet``, ``data/*/*.parquet``, ``videos/<key>/*/*.mp4`` holding several
  episodes each, cut by the episodes' ``from_timestamp``). N rows of an episode are N frames and
  the first N - 1 actions. Success is ``next.success`` (last row) when the dataset has it, else a
  positive ``next.reward``, else every episode counts as a successful demonstration (said so).
- :func:`import_videos`: one MP4 per view of ONE demonstration, plus its task text.

Frames are centre-cropped to a square and resized to ``image_size`` (OpenCV, area filter); the
frame counts of the views must agree. Episodes carry no ground-truth progress and no keyframes
(the reward-model jobs label them: :mod:`reward_models.task_data`), ``imperfection`` "unknown".
Bad input raises ONE line naming the file and the key (:class:`SourceError`), before the
destination is touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np

from sim.episodes import Episode, EpisodeWriter

__all__ = ["SourceError", "check_image_size", "import_robomimic", "import_lerobot", "import_videos", "square_frames",
           "read_video", "ROBOMIMIC_VIEWS"]

#: robomimic's usual camera observation keys and the stack's view names for them
ROBOMIMIC_VIEWS = {"front": "agentview_image", "wrist": "robot0_eye_in_hand_image"}


class SourceError(ValueError):
    """A source that cannot be imported; the message names the file and the key."""


def square_frames(frames, size: int, where: str) -> np.ndarray:
    """Frames uint8 [N, H, W, 3] (RGB) centre-cropped to a square and resized to ``size`` px.

    Raises:
        SourceError: another dtype, shape or channel count (``where`` names the source).
    """
    x = np.asarray(frames)
    if x.dtype != np.uint8:
        raise SourceError(f"{where}: dtype {x.dtype}, expected uint8 RGB images [N, H, W, 3]")
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise SourceError(f"{where}: shape {x.shape}, expected RGB images [N, H, W, 3] with N >= 1")
    h, w = x.shape[1:3]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top:top + s, left:left + s]
    if s == size:
        return np.ascontiguousarray(x)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in x])


def read_video(path, where: str | None = None) -> np.ndarray:
    """Every frame of a video file (imageio's ffmpeg reader) as uint8 [N, H, W, 3] RGB.

    Raises:
        SourceError: no such file, or a file ffmpeg cannot decode (names it).
    """
    import imageio.v2 as imageio

    where = where or os.fspath(path)
    if not Path(path).is_file():
        raise SourceError(f"{where}: no video file at {os.fspath(path)}")
    try:
        with imageio.get_reader(os.fspath(path), format="FFMPEG") as r:
            frames = [np.asarray(f) for f in r]
    except Exception as exc:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{where}: not a readable video ({first})") from None
    if not frames:
        raise SourceError(f"{where}: the video holds no frames")
    x = np.stack(frames)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    return x[..., :3].astype(np.uint8, copy=False)


def check_image_size(image_size) -> int:
    """``image_size`` of an imported file: an int in [16, 512] (the GRM's frame sizes), else ValueError."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 512:
        raise ValueError(f"image_size must be an int in [16, 512], got {image_size!r}")
    return int(image_size)


def _episode(frames: dict, states, actions, rewards, success: bool, seed: int, where: str) -> Episode:
    """An :class:`Episode` of N frames (N - 1 actions) from the views' frames, checked to agree."""
    counts = {v: int(f.shape[0]) for v, f in frames.items()}
    if len(set(counts.values())) != 1:
        raise SourceError(f"{where}: the views have different frame counts {counts}; each view needs one "
                           "frame per time step")
    n = next(iter(counts.values()))
    if n < 2:
        raise SourceError(f"{where}: {n} frame(s); an episode needs at least 2")
    t = n - 1
    actions = np.asarray(actions, np.float32).reshape(t, -1) if actions is not None else np.zeros((t, 0), np.float32)
    states = np.asarray(states, np.float32).reshape(n, -1) if states is not None else np.zeros((n, 0), np.float32)
    rewards = np.zeros(t, np.float32) if rewards is None else np.asarray(rewards, np.float32).reshape(t)
    for key, arr in (("actions", actions), ("state", states), ("rewards", rewards)):
        if not np.isfinite(arr).all():
            raise SourceError(f"{where}: {key} hold NaN or inf")
    dones = np.zeros(t, np.uint8)
    dones[-1] = 1
    return Episode(frames=frames, states=states, actions=actions, rewards=rewards, dones=dones, progress=None,
                   keyframes=np.zeros(0, np.int64), keyframe_names=[], success=bool(success),
                   imperfection="unknown", seed=int(seed))


def _write(out, task: str, task_text: str, views, size: int, episodes: list[Episode], source: str) -> Path:
    if not episodes:
        raise SourceError(f"{source}: no episodes to import")
    with EpisodeWriter(out, task, {"source": source}, tuple(views), size, task_text=task_text) as w:
        for ep in episodes:
            w.add(ep)
    return Path(out)


# ------------------------------------------------------------------------------------------------
# robomimic HDF5
# ------------------------------------------------------------------------------------------------
def _robomimic_demo(g, name: str, views: Mapping[str, str], size: int, path: str) -> tuple[dict, np.ndarray]:
    """(frames {view: uint8 [T+1, S, S, 3]}, states float32 [T+1, D]) of one robomimic demo."""
    def ds(key):
        try:
            return g[key][()]
        except KeyError:
            raise SourceError(f"{path}: data/{name}/{key}: missing") from None
        except OSError as exc:
            raise SourceError(f"{path}: data/{name}/{key}: unreadable ({exc})") from None

    t = int(ds("actions").shape[0])
    frames = {}
    for view, key in views.items():
        obs, nxt = ds(f"obs/{key}"), ds(f"next_obs/{key}") if f"next_obs/{key}" in g else None
        where = f"{path}: data/{name}/obs/{key}"
        if obs.shape[0] != t:
            raise SourceError(f"{where}: {obs.shape[0]} frames for {t} actions")
        seq = np.concatenate([obs, nxt[-1:]]) if nxt is not None and len(nxt) else obs
        frames[view] = square_frames(seq, size, where)
    lowdim = sorted(k for k in g["obs"].keys() if g["obs"][k].ndim == 2 and k not in views.values())
    n = next(iter(frames.values())).shape[0]
    if lowdim:
        st = np.concatenate([ds(f"obs/{k}").astype(np.float32) for k in lowdim], 1)
        last = (np.concatenate([g["next_obs"][k][-1:].astype(np.float32) for k in lowdim], 1)
                if "next_obs" in g and all(k in g["next_obs"] for k in lowdim) else st[-1:])
        st = np.concatenate([st, last])[:n]
    else:
        st = np.zeros((n, 0), np.float32)
    return frames, st


def import_robomimic(src, out, task: str | None = None, task_text: str | None = None,
                     views: Mapping[str, str] | None = None, image_size: int = 64,
                     demos: Sequence[int] | None = None) -> Path:
    """Import a robomimic HDF5 file as an episode file at ``out``.

    Args:
        src: the robomimic ``.hdf5``.  out: the episode file to write.
        task: the task name (a plain word; default: robomimic's ``env_name`` lowercased).
        task_text: the instruction (required).
        views: {view name: image observation key} (default :data:`ROBOMIMIC_VIEWS`, those present).
        image_size: pixels per side of the stored frames.  demos: positions of the demos to import.
    Returns:
        ``out``.
    Raises:
        SourceError: not HDF5, no ``data`` group, a missing key, mismatched frame counts, images
            that are not uint8 RGB (names the file and key).  ValueError: bad arguments.
    """
    size, src = check_image_size(image_size), os.fspath(src)
    if Path(src).is_dir():
        raise IsADirectoryError(f"src={src!r} is a folder; format=robomimic reads one .hdf5 file")
    if not Path(src).is_file():
        raise FileNotFoundError(f"src={src!r}: no robomimic file there")
    try:
        h5 = h5py.File(src, "r")
    except OSError as exc:
        raise SourceError(f"{src}: not a readable HDF5 file ({exc})") from None
    with h5:
        if "data" not in h5:
            raise SourceError(f"{src}: data: missing group (a robomimic file has data/demo_<i>)")
        names = sorted(h5["data"].keys(), key=lambda k: (len(k), k))
        if not names:
            raise SourceError(f"{src}: data: no demos")
        first = h5["data"][names[0]]
        if views is None:
            have = set(first["obs"].keys()) if "obs" in first else set()
            views = {v: k for v, k in ROBOMIMIC_VIEWS.items() if k in have}
            if not views:
                raise SourceError(f"{src}: data/{names[0]}/obs holds none of {sorted(ROBOMIMIC_VIEWS.values())}; "
                                   f"map views to its image keys with views={{front: <key>}}; keys: {sorted(have)}")
        if task is None:
            try:
                env = json.loads(h5["data"].attrs.get("env_args", "{}")).get("env_name", "")
            except (json.JSONDecodeError, TypeError):
                env = ""
            task = str(env).lower().replace(" ", "-") or Path(src).stem
        picks = range(len(names)) if demos is None else list(demos)
        eps = []
        for i in picks:
            if not 0 <= int(i) < len(names):
                raise ValueError(f"demos: index {i} out of range; {src} holds {len(names)} demos")
            name = names[int(i)]
            g = h5["data"][name]
            frames, states = _robomimic_demo(g, name, views, size, src)
            rewards = g["rewards"][()] if "rewards" in g else None
            dones = g["dones"][()] if "dones" in g else None
            success = bool((dones is not None and len(dones) and dones[-1]) or
                           (rewards is not None and len(rewards) and np.max(rewards) > 0))
            actions, n = g["actions"][()], next(iter(frames.values())).shape[0]
            if len(actions) == n:  # no next_obs: the last action leads to no stored frame
                actions, rewards = actions[:n - 1], None if rewards is None else rewards[:n - 1]
            eps.append(_episode(frames, states, actions, rewards, success, int(i), f"{src}: data/{name}"))
    return _write(out, task, task_text or "", views, size, eps, f"robomimic:{src}")


# ------------------------------------------------------------------------------------------------
# LeRobot v3.0 dataset folder
# ------------------------------------------------------------------------------------------------
def _read_parquet(files: list[Path], where: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files:
        raise SourceError(f"{where}: no parquet files")
    try:
        return pa.concat_tables([pq.read_table(f) for f in files]).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{where}: unreadable parquet ({str(exc).splitlines()[0]})") from None


def _lerobot_meta(root: Path) -> tuple[dict, dict]:
    """(info.json, the episodes table as {column: list}) of a v3.0 dataset folder."""
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise SourceError(f"{root}: meta/info.json missing (a LeRobot dataset folder has meta/, data/, videos/)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{info_path}: not valid JSON ({exc})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise SourceError(f"{info_path}: codebase_version {version!r}; this importer reads LeRobot v3.0 datasets "
                           "(convert older ones with lerobot's v2.1 -> v3.0 converter)")
    for key in ("fps", "features", "data_path", "video_path"):
        if key not in info:
            raise SourceError(f"{info_path}: {key}: missing")
    eps = _read_parquet(sorted((root / "meta" / "episodes").glob("*/*.parquet")), f"{root}/meta/episodes")
    for key in ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                "data/file_index"):
        if key not in eps:
            raise SourceError(f"{root}/meta/episodes: column {key!r} missing")
    return info, eps


def _lerobot_success(rows: dict, where: str) -> bool | None:
    for key in ("next.success", "next.reward"):
        if key in rows:
            vals = np.asarray(rows[key], dtype=np.float64).reshape(len(rows[key]), -1)
            return bool(vals[-1].max() > 0) if key == "next.success" else bool(vals.max() > 0)
    return None


def import_lerobot(root, out, task: str | None = None, task_text: str | None = None,
                   views: Mapping[str, str] | None = None, image_size: int = 64,
                   episodes: Sequence[int] | None = None) -> Path:
    """Import episodes of a local LeRobot v3.0 dataset folder as an episode file at ``out``.

    Args:
        root: the dataset folder.  out: the episode file to write.
        task: the task name (a plain word; default: the folder's name).
        task_text: the instruction (default: the episodes' task, which must then be one).
        views: {view name: video feature key} (default: every video feature, named by its last
            dotted part: ``observation.images.top`` -> ``top``).
        image_size: pixels per side.  episodes: the ``episode_index`` values to import (default: all).
    Returns:
        ``out``.
    Raises:
        SourceError: not a v3.0 folder, a missing file or column, an undecodable video, frame
            counts that do not match the episode's length, several task texts and no ``task_text``
            (the message names the file and key).  ValueError: bad arguments.
    """
    size, root = check_image_size(image_size), Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"src={os.fspath(root)!r}: no LeRobot dataset folder there")
    info, meta = _lerobot_meta(root)
    videos = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    if views is None:
        views = {k.split(".")[-1]: k for k in videos}
    bad = [k for k in views.values() if k not in videos]
    if bad or not views:
        raise SourceError(f"{root}/meta/info.json: features: no video feature {bad or ''}; video features: {videos}")
    order = {int(e): i for i, e in enumerate(meta["episode_index"])}
    picks = sorted(order) if episodes is None else [int(e) for e in episodes]
    missing = [e for e in picks if e not in order]
    if missing:
        raise ValueError(f"episodes: {missing} not in {root} (it holds episode_index {sorted(order)[:10]}...)")
    texts = sorted({t for e in picks for t in (meta.get("tasks", [[]] * len(order))[order[e]] or [])})
    if task_text is None and len(texts) != 1:
        raise SourceError(f"{root}/meta/episodes: tasks: the episodes have {len(texts)} task texts {texts[:4]}; "
                           "give task_text= (or import the episodes of one task with episodes=[...])")
    fps, data_cache, video_cache, eps, note = float(info["fps"]), {}, {}, [], False
    for e in picks:
        i = order[e]
        where = f"{root}: episode {e}"
        data_file = root / info["data_path"].format(chunk_index=meta["data/chunk_index"][i],
                                                    file_index=meta["data/file_index"][i])
        if data_file not in data_cache:
            data_cache[data_file] = _read_parquet([data_file], os.fspath(data_file))
        table = data_cache[data_file]
        idx = np.asarray(table.get("index", []))
        lo, hi = int(meta["dataset_from_index"][i]), int(meta["dataset_to_index"][i])
        sel = np.nonzero((idx >= lo) & (idx < hi))[0]
        n = int(meta["length"][i])
        if sel.size != n:
            raise SourceError(f"{data_file}: index: {sel.size} rows of episode {e}, meta/episodes says length {n}")
        rows = {k: [v[j] for j in sel] for k, v in table.items()}
        frames = {}
        for view, key in views.items():
            col = f"videos/{key}/"
            if col + "chunk_index" not in meta:
                raise SourceError(f"{root}/meta/episodes: column {col + 'chunk_index'!r} missing")
            vf = root / info["video_path"].format(video_key=key, chunk_index=meta[col + "chunk_index"][i],
                                                  file_index=meta[col + "file_index"][i])
            if vf not in video_cache:
                video_cache[vf] = read_video(vf)
            start = int(round(float(meta.get(col + "from_timestamp", [0.0] * len(order))[i]) * fps))
            clip = video_cache[vf][start:start + n]
            if clip.shape[0] != n:
                raise SourceError(f"{vf}: {clip.shape[0]} frames of episode {e} from frame {start}, its length is {n}")
            frames[view] = square_frames(clip, size, f"{vf}")
        success = _lerobot_success(rows, where)
        note = note or success is None
        state = np.asarray(rows["observation.state"], np.float32) if "observation.state" in rows else None
        action = np.asarray(rows["action"], np.float32)[:-1] if "action" in rows else None
        eps.append(_episode(frames, state, action, None, True if success is None else success, e, where))
    if note:
        print(f"{root}: no next.success or next.reward column: every episode is taken as a successful demonstration")
    return _write(out, task or root.name, task_text or texts[0], views, size, eps, f"lerobot:{root}")


# ------------------------------------------------------------------------------------------------
# One MP4 per view
# ------------------------------------------------------------------------------------------------
def import_videos(videos: Mapping[str, str], out, task: str, task_text: str, image_size: int = 64,
                  success: bool = True) -> Path:
    """Import ONE demonstration given as a video file per view (``{"front": "front.mp4", ...}``).

    Returns:
        ``out`` (one episode, no actions or states: zero columns wide).
    Raises:
        SourceError: an unreadable video or views whose frame counts differ (names the files).
        ValueError: no videos, an empty task text, a bad image size.
    """
    size = check_image_size(image_size)
    if not videos:
        raise ValueError("videos must map at least one view to a video file, e.g. videos={front: front.mp4}")
    frames = {v: square_frames(read_video(p), size, os.fspath(p)) for v, p in videos.items()}
    counts = {os.fspath(videos[v]): f.shape[0] for v, f in frames.items()}
    if len(set(counts.values())) != 1:
        raise SourceError(f"videos: frame counts differ {counts}; the views must be recorded together")
    ep = _episode(frames, None, None, None, bool(success), 0, "videos")
    return _write(out, task, task_text, tuple(videos), size, [ep], "video:" + ",".join(map(os.fspath, videos.values())))
