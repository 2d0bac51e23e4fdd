"""The ``dopa import`` job: demonstrations recorded elsewhere as the stack's episode file.

    dopa import format=robomimic src=lift_ph.hdf5 task=cube-lift task_text='lift the cube' out=data/cube.hdf5
    dopa import format=lerobot src=~/datasets/koch_pick task=pick out=data/pick.hdf5
    dopa import format=video videos='{front: front.mp4, wrist: wrist.mp4}' task=wipe task_text='wipe the table' out=data/wipe.hdf5

Reads ``configs/import.yaml``, checks the values, and calls :mod:`sim.importers`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sim.episodes import read_episodes
from sim.importers import check_image_size, import_lerobot, import_robomimic, import_videos

FORMATS = ("robomimic", "lerobot", "video")


def _mapping(value, key: str) -> dict | None:
    if value is None:
        return None
    d = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if not isinstance(d, dict) or not d or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
        raise ValueError(f"{key} must map view names to {'files' if key == 'videos' else 'source keys'}, "
                         f"e.g. {key}={{front: ...}}, got {value!r}")
    return d


def _episodes(value) -> list[int] | None:
    """``episodes``: null (all), one index or a non-empty list of indices >= 0."""
    if value is None:
        return None
    vals = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    vals = [vals] if not isinstance(vals, (list, tuple)) else vals
    ok = bool(vals) and all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in vals)
    if not ok:
        raise ValueError(f"episodes must be null (all) or a non-empty list of ints >= 0 (robomimic: demo positions, "
                         f"lerobot: episode_index), got {vals!r}")
    return list(vals)


def run(cfg: DictConfig) -> int:
    """Import, then read the written file back (the one episode reader) and print what it holds."""
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    size = check_image_size(cfg.image_size)
    if not str(cfg.out).strip():
        raise ValueError("out must name the episode file to write, e.g. out=data/wipe.hdf5, got ''")
    out = Path(str(cfg.out))
    if out.suffix.lower() not in (".hdf5", ".h5"):
        raise ValueError(f"out={str(out)!r} must be an HDF5 episode file ending in .hdf5 or .h5, "
                         f"got suffix {out.suffix!r}")
    if out.is_dir():
        raise IsADirectoryError(f"out={str(out)!r} is a folder; out is the episode file to write (.hdf5)")
    views = _mapping(cfg.views, "views")
    episodes = _episodes(cfg.episodes)
    text = None if cfg.task_text is None else str(cfg.task_text)
    if text is not None and not text.strip():
        raise ValueError(f"task_text must say what the robot does, e.g. task_text='wipe the table', got {text!r}")
    task = None if cfg.task is None else str(cfg.task)
    if fmt != "video" and cfg.src is None:
        raise ValueError(f"format={fmt} needs src=<{'file.hdf5' if fmt == 'robomimic' else 'dataset folder'}>")
    if fmt == "video":
        sources = list((_mapping(cfg.videos, "videos") or {}).values())
    else:
        sources = [] if cfg.src is None else [str(cfg.src)]
    for src in sources:
        if out.resolve() == Path(src).expanduser().resolve():
            raise ValueError(f"out={str(out)!r} is the source file itself; write the episode file elsewhere, "
                             "the import would replace the recording")
    if fmt == "robomimic":
        if text is None:
            raise ValueError("format=robomimic needs task_text='<what the robot does>' (robomimic files state none)")
        import_robomimic(str(cfg.src), out, task, text, views, size, episodes)
    elif fmt == "lerobot":
        import_lerobot(str(cfg.src), out, task, text, views, size, episodes)
    else:
        videos = _mapping(cfg.videos, "videos")
        if videos is None or task is None or text is None:
            raise ValueError("format=video needs videos={view: file.mp4, ...}, task=<name> and task_text='...'")
        import_videos(videos, out, task, text, size, bool(cfg.success))
    eps = read_episodes(out, views=())
    print(f"wrote {out}: {len(eps)} episode(s) of task {eps[0].task!r} ({eps[0].task_text!r}), "
          f"{sum(e.success for e in eps)} successful, {sum(e.num_frames for e in eps)} frames")
    return 0
