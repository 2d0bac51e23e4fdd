"""Episode videos: the views side by side, a progress bar, and the sub-task keyframes marked.

Each video frame is the episode's frame ``t`` of every view (scaled up to at least ``min_height``
pixels with nearest-neighbour), then a strip drawn with OpenCV: the current sub-task's name, the
ground-truth progress as a bar, and a timeline with a tick at each keyframe. On a keyframe and a
few frames after it, the strip turns the sub-task's colour and names the sub-task just completed.
Written with imageio's ffmpeg plugin (H.264, ``libx264``) to a temporary file, then renamed.

    python -m sim.video data/lift.hdf5 demo_0 lift0.mp4        # any stored episode to a video
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import cv2
import imageio.v2 as imageio
import numpy as np

from basics.atomic import atomic_file
from sim.episodes import EpisodeFile

# RGB colours, one per sub-task (cycled)
_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (213, 94, 0), (204, 121, 167)]
_STRIP = 44  # pixels of the information strip under the views


def _pad16(img: np.ndarray) -> np.ndarray:
    """Pad to a multiple of 16 pixels per side (what H.264 encoders want) with black."""
    h, w = img.shape[:2]
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    if (H, W) == (h, w):
        return img
    out = np.zeros((H, W, 3), dtype=np.uint8)
    out[:h, :w] = img
    return out


def render_frames(episode, views: Sequence[str] | None = None, subtasks: Sequence[str] | None = None,
                  min_height: int = 192, flash: int = 6) -> np.ndarray:
    """Compose the video frames of an episode.

    Args:
        episode: a :class:`sim.episodes.Episode` (``frames``, ``progress``, ``keyframes``).
        views: views to show, left to right (default: all of the episode's, sorted as stored).
        subtasks: all sub-task names of the task (default: the episode's ``keyframe_names``).
        min_height: views are scaled up by a whole factor to at least this height (pixels).
        flash: frames for which a keyframe stays highlighted.
    Returns:
        uint8 ``[T+1, H', W', 3]``, H' and W' multiples of 16.
    Raises:
        ValueError: no views, or an unknown view (lists the episode's).
    """
    views = list(episode.frames) if views is None else list(views)
    if not views:
        raise ValueError("an episode video needs at least one view; this episode has no frames")
    for v in views:
        if v not in episode.frames:
            raise ValueError(f"unknown view {v!r}; the episode has: {', '.join(episode.frames) or '(none)'}")
    names = list(subtasks) if subtasks else list(episode.keyframe_names)
    kfs = [int(k) for k in np.asarray(episode.keyframes).reshape(-1)]
    T1 = episode.frames[views[0]].shape[0]
    h = episode.frames[views[0]].shape[1]
    scale = max(1, -(-min_height // h))
    out = []
    for t in range(T1):
        tiles = [np.repeat(np.repeat(episode.frames[v][t], scale, axis=0), scale, axis=1) for v in views]
        top = np.concatenate(tiles, axis=1)
        W = top.shape[1]
        strip = np.full((_STRIP, W, 3), 32, dtype=np.uint8)
        done = sum(k <= t for k in kfs)
        recent = [j for j, k in enumerate(kfs) if 0 <= t - k < flash]
        if recent:  # a sub-task just ended: the strip takes its colour
            j = recent[-1]
            strip[:] = _COLOURS[j % len(_COLOURS)]
            label = f"{names[j] if j < len(names) else j} done (keyframe {kfs[j]})"
            colour = (0, 0, 0)
        else:
            label = f"{done}/{len(names)} done, now: {names[done]}" if done < len(names) else f"{done}/{len(names)} done"
            colour = (255, 255, 255)
        cv2.putText(strip, f"t={t} {label}", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, 1, cv2.LINE_AA)
        # progress bar with its value, then a timeline with a tick per keyframe and the current time
        p = float(np.clip(episode.progress[t], 0.0, 1.0))
        bx0, bx1 = 40, W - 6
        cv2.putText(strip, f"{p:.2f}", (4, 27), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, 1, cv2.LINE_AA)
        cv2.rectangle(strip, (bx0, 19), (bx1, 27), (90, 90, 90), -1)
        cv2.rectangle(strip, (bx0, 19), (bx0 + int(round(p * (bx1 - bx0))), 27), (60, 200, 60), -1)
        ty = _STRIP - 8
        cv2.line(strip, (4, ty), (W - 6, ty), (160, 160, 160), 1)
        for j, k in enumerate(kfs):
            x = 4 + int(round(k / max(T1 - 1, 1) * (W - 10)))
            cv2.line(strip, (x, ty - 5), (x, ty + 5), _COLOURS[j % len(_COLOURS)], 2)
        x = 4 + int(round(t / max(T1 - 1, 1) * (W - 10)))
        cv2.circle(strip, (x, ty), 3, (255, 255, 255), -1)
        out.append(_pad16(np.concatenate([top, strip], axis=0)))
    return np.stack(out)


def write_episode_video(episode, path, views: Sequence[str] | None = None, subtasks: Sequence[str] | None = None,
                        fps: int = 20, min_height: int = 192) -> str:
    """Write an episode as an H.264 MP4 (views side by side, progress, keyframes marked).

    The file appears under ``path`` only when complete (temporary file, then ``os.replace``).
    Returns ``path``. Raises ValueError for no/unknown views or fps < 1.
    """
    if int(fps) < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    frames = render_frames(episode, views, subtasks, min_height=min_height)
    path = os.fspath(path)
    with atomic_file(path, ".mp4") as tmp:
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=int(fps), codec="libx264",
                                macro_block_size=16, quality=8, ffmpeg_log_level="error") as w:
            for f in frames:
                w.append_data(f)
    return path


def episode_file_video(h5_path, demo, out_path, views: Sequence[str] | None = None, stride: int = 1,
                       fps: int = 20) -> str:
    """Turn a stored episode (``demo`` name or position in an episode file) into an MP4 at ``out_path``."""
    with EpisodeFile(h5_path) as f:
        ep = f.read(demo, views=views, stride=stride)
        subtasks = f.subtasks
    return write_episode_video(ep, out_path, subtasks=subtasks, fps=fps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.video", description="Write a stored episode as an MP4.")
    p.add_argument("file", help="episode file (.hdf5)")
    p.add_argument("demo", help="demo name (demo_3) or position (3)")
    p.add_argument("out", help="output .mp4")
    p.add_argument("--views", nargs="*", default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=int, default=20)
    a = p.parse_args(argv)
    demo = int(a.demo) if a.demo.isdigit() else a.demo
    print(episode_file_video(a.file, demo, a.out, views=a.views, stride=a.stride, fps=a.fps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
