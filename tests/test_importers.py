"""``dopa import``: robomimic HDF5, a LeRobot v3.0 folder and one MP4 per view, each built here."""

from __future__ import annotations

import json

import h5py
import imageio.v2 as imageio
import numpy as np
import pytest

from jobs.cli import main
from sim.episodes import read_episodes

SIZE = 32


def _frames(n, h=48, w=64, seed=0):
    """n RGB frames [n, h, w, 3] uint8: a bright square moving right over a dark background."""
    x = np.full((n, h, w, 3), 30, np.uint8)
    for t in range(n):
        c = 8 + int(t * (w - 24) / max(1, n - 1))
        x[t, h // 2 - 8:h // 2 + 8, c:c + 16] = (220, 60 + 5 * t % 150, 40)
    return x


def _write_mp4(path, frames, fps=10):
    with imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=16,
                            quality=9, ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)


def _robomimic(path, lengths=(6, 8), success=(True, False), float_images=False):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "NutAssembly", "type": 1, "env_kwargs": {}})
        for i, (t, ok) in enumerate(zip(lengths, success, strict=True)):
            g = data.create_group(f"demo_{i}")
            img = _frames(t + 1, 84, 84, seed=i)
            g["obs/agentview_image"] = img[:t].astype(np.float32) / 255 if float_images else img[:t]
            g["next_obs/agentview_image"] = img[1:]
            g["obs/robot0_eye_in_hand_image"] = img[:t, ::-1]
            g["next_obs/robot0_eye_in_hand_image"] = img[1:, ::-1]
            g["obs/robot0_eef_pos"] = np.arange(t * 3, dtype=np.float64).reshape(t, 3)
            g["next_obs/robot0_eef_pos"] = np.arange(3, t * 3 + 3, dtype=np.float64).reshape(t, 3)
            g["actions"] = np.zeros((t, 7))
            g["rewards"] = np.eye(1, t, t - 1)[0] * float(ok)
            g["dones"] = (np.eye(1, t, t - 1)[0] * ok).astype(np.int64)
    return path


def test_import_robomimic(tmp_path, capsys):
    src = _robomimic(tmp_path / "nut.hdf5")
    out = tmp_path / "nut_eps.hdf5"
    assert main(["import", "format=robomimic", f"src={src}", "task_text='put the nut on the peg'",
                 f"image_size={SIZE}", f"out={out}"]) == 0
    eps = read_episodes(out)
    assert [e.num_frames for e in eps] == [7, 9] and [e.success for e in eps] == [True, False]
    assert eps[0].task == "nutassembly" and eps[0].task_text == "put the nut on the peg"
    assert set(eps[0].frames) == {"front", "wrist"} and eps[0].frames["front"].shape == (7, SIZE, SIZE, 3)
    assert eps[0].states.shape == (7, 3) and eps[0].progress is None and eps[0].imperfection == "unknown"
    np.testing.assert_allclose(eps[0].states[-1], [18, 19, 20])  # the last state comes from next_obs
    # images that are not uint8: one line naming the file and key, nothing written
    bad = _robomimic(tmp_path / "float.hdf5", float_images=True)
    capsys.readouterr()
    assert main(["import", "format=robomimic", f"src={bad}", "task_text=x", f"out={tmp_path / 'f.hdf5'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "float.hdf5: data/demo_0/obs/agentview_image: dtype float32, expected uint8" in err
    assert not (tmp_path / "f.hdf5").exists()
    assert main(["import", "format=robomimic", f"src={src}", "task_text=x", "views={front: agentview}",
                 f"out={tmp_path / 'g.hdf5'}"]) == 1
    assert "nut.hdf5: data/demo_0/obs/agentview: missing" in capsys.readouterr().err


def _lerobot(root, lengths=(5, 7), fps=10, drop_frames=0):
    """A LeRobot v3.0 folder: two episodes in one parquet file and one MP4 per camera."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    keys = ("observation.images.top", "observation.images.wrist")
    info = {"codebase_version": "v3.0", "fps": fps, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {**{k: {"dtype": "video", "shape": [3, 48, 64]} for k in keys},
                         "observation.state": {"dtype": "float32", "shape": [2]},
                         "action": {"dtype": "float32", "shape": [2]}}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    total = sum(lengths)
    frames = _frames(total)
    for k in keys:
        (root / "videos" / k / "chunk-000").mkdir(parents=True)
        _write_mp4(root / "videos" / k / "chunk-000" / "file-000.mp4", frames[:total - drop_frames], fps)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    ep = {"episode_index": list(range(len(lengths))), "length": list(lengths), "tasks": [["fold the towel"]] * len(lengths),
          "dataset_from_index": starts.tolist(), "dataset_to_index": (starts + lengths).tolist(),
          "data/chunk_index": [0] * len(lengths), "data/file_index": [0] * len(lengths)}
    for k in keys:
        ep.update({f"videos/{k}/chunk_index": [0] * len(lengths), f"videos/{k}/file_index": [0] * len(lengths),
                   f"videos/{k}/from_timestamp": (starts / fps).tolist(),
                   f"videos/{k}/to_timestamp": ((starts + lengths) / fps).tolist()})
    pq.write_table(pa.table(ep), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    rows = {"index": list(range(total)), "episode_index": [i for i, n in enumerate(lengths) for _ in range(n)],
            "frame_index": [t for n in lengths for t in range(n)],
            "observation.state": [[float(i), 0.5] for i in range(total)], "action": [[0.1, -0.1]] * total,
            "next.success": [t == n - 1 and i == 0 for i, n in enumerate(lengths) for t in range(n)]}
    pq.write_table(pa.table(rows), root / "data" / "chunk-000" / "file-000.parquet")
    return root


def test_import_lerobot(tmp_path, capsys):
    root = _lerobot(tmp_path / "towel")
    out = tmp_path / "towel.hdf5"
    assert main(["import", "format=lerobot", f"src={root}", f"image_size={SIZE}",
                 "views={front: observation.images.top, wrist: observation.images.wrist}", f"out={out}"]) == 0
    eps = read_episodes(out)
    assert [e.num_frames for e in eps] == [5, 7] and [e.success for e in eps] == [True, False]
    assert eps[0].task == "towel" and eps[0].task_text == "fold the towel"
    assert eps[1].states[0, 0] == 5.0 and eps[1].actions.shape == (6, 2)  # rows of episode 1, N - 1 actions
    # the square moves right: its column in the first and last frames of episode 1 (decoded H.264)
    col = lambda f: int(np.argmax(f[:, :, 0].astype(int).sum(0)))  # noqa: E731
    assert col(eps[1].frames["front"][-1]) > col(eps[1].frames["front"][0])
    short = _lerobot(tmp_path / "short", drop_frames=2)
    capsys.readouterr()
    assert main(["import", "format=lerobot", f"src={short}", f"out={tmp_path / 's.hdf5'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "file-000.mp4: 5 frames of episode 1 from frame 5, its length is 7" in err
    assert not (tmp_path / "s.hdf5").exists()


def test_import_videos(tmp_path, capsys):
    _write_mp4(tmp_path / "front.mp4", _frames(9))
    _write_mp4(tmp_path / "wrist.mp4", _frames(9)[:, ::-1])
    _write_mp4(tmp_path / "short.mp4", _frames(6))
    out = tmp_path / "wipe.hdf5"
    assert main(["import", "format=video", f"videos={{front: {tmp_path / 'front.mp4'}, wrist: {tmp_path / 'wrist.mp4'}}}",
                 "task=wipe", "task_text='wipe the table'", f"image_size={SIZE}", f"out={out}"]) == 0
    (ep,) = read_episodes(out)
    assert ep.num_frames == 9 and ep.success and ep.actions.shape == (8, 0) and ep.frames["wrist"].shape[1] == SIZE
    capsys.readouterr()
    assert main(["import", "format=video", f"videos={{front: {tmp_path / 'front.mp4'}, wrist: {tmp_path / 'short.mp4'}}}",
                 "task=wipe", "task_text=x", f"out={tmp_path / 'b.hdf5'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "frame counts differ" in err and "short.mp4': 6" in err
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert main(["import", "format=video", f"videos={{front: {tmp_path / 'junk.mp4'}}}", "task=wipe", "task_text=x",
                 f"out={tmp_path / 'c.hdf5'}"]) == 1
    assert "junk.mp4: not a readable video" in capsys.readouterr().err
    assert not (tmp_path / "b.hdf5").exists() and not (tmp_path / "c.hdf5").exists()


@pytest.mark.parametrize("width", [3, 4])
def test_state_widths_differ_refused(tmp_path, width):
    """Issue 23 item 13: demos of one file with different state widths are refused, named."""
    src = _robomimic(tmp_path / "nut.hdf5")
    out = tmp_path / "eps.hdf5"
    assert main(["import", "format=robomimic", f"src={src}", "task_text=x", f"image_size={SIZE}", f"out={out}"]) == 0
    with h5py.File(out, "r+") as f:
        g = f["data/demo_1"]
        t = g["actions"].shape[0]
        del g["obs/state"], g["final_obs/state"]
        g["obs/state"] = np.zeros((t, width), np.float32)
        g["final_obs/state"] = np.zeros(width, np.float32)
    if width == 3:
        assert len(read_episodes(out, views=())) == 2
        return
    with pytest.raises(ValueError, match=r"eps\.hdf5: demo_1/obs/state: states are 4 wide but demo_0's are 3"):
        read_episodes(out, views=())
