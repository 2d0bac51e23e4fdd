"""Episode files: exact round trip of real recorded episodes, validation errors, subsampling, the
``dopa demos`` job and its videos. Real robosuite Lift, one 32 px view, two short episodes."""

import json
import os
import shutil

import h5py
import imageio.v2 as imageio
import numpy as np
import pytest

import sim
from sim.demos import record_episode
from sim.episodes import EpisodeFile, EpisodeFileError, EpisodeWriter, read_episodes, subsample
from sim.experts import ScriptedExpert
from sim.video import episode_file_video, write_episode_video


def _video_frames(path):
    """All frames of an MP4 (a comprehension: the ffmpeg reader's length is unknown, list() would fail)."""
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [f for f in reader]


KWARGS = {"controller": "osc_pose", "max_episode_steps": 201, "terminate_on_success": False}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two real Lift episodes (one clean, one regressing) and the file they were written to."""
    env = sim.make_env("lift", num_envs=1, views=("front",), image_size=32, seed=0, **KWARGS)
    try:
        expert = ScriptedExpert(env, seed=0)
        eps = [record_episode(env, expert, seed=21, imperfection="none", post_success_steps=3),
               record_episode(env, expert, seed=22, imperfection="regress", undo_steps=12)]
    finally:
        env.close()
    path = tmp_path_factory.mktemp("episodes") / "lift.hdf5"
    with EpisodeWriter(path, "lift", KWARGS, views=("front",), image_size=32) as w:
        names = [w.add(ep) for ep in eps]
    assert names == ["demo_0", "demo_1"]
    return eps, path


def test_round_trip_is_exact(recorded):
    eps, path = recorded
    back = read_episodes(path)
    assert len(back) == 2
    for a, b in zip(eps, back, strict=True):
        assert b.frames.keys() == {"front"}
        np.testing.assert_array_equal(a.frames["front"], b.frames["front"])
        assert b.frames["front"].dtype == np.uint8 and b.frames["front"].shape == (a.num_steps + 1, 32, 32, 3)
        for key in ("states", "actions", "rewards", "dones", "progress", "keyframes"):
            x, y = getattr(a, key), getattr(b, key)
            assert x.dtype == y.dtype, key
            np.testing.assert_array_equal(x, y, err_msg=key)
        assert (a.success, a.imperfection, a.seed, a.keyframe_names) == (b.success, b.imperfection, b.seed,
                                                                           b.keyframe_names)
        assert b.task == "lift" and b.task_text == sim.task_text("lift") == "lift the red cube"
    assert back[0].success and not back[1].success
    assert back[1].imperfection == "regress" and back[1].progress[-1] < back[1].progress.max() - 0.5


def test_robomimic_layout_and_attributes(recorded):
    eps, path = recorded
    with h5py.File(path, "r") as f:
        assert f.attrs["env_name"] == "lift" and f.attrs["dopa_format"] == 1
        assert json.loads(f.attrs["env_kwargs"]) == KWARGS and f.attrs["controller"] == "osc_pose"
        assert json.loads(f.attrs["views"]) == ["front"] and f.attrs["image_size"] == 32
        assert f.attrs["task_text"] == "lift the red cube"
        assert f["data"].attrs["total"] == sum(e.num_steps for e in eps)
        d = f["data/demo_0"]
        T = eps[0].num_steps
        assert d["obs/front_image"].shape == (T, 32, 32, 3) and d["obs/front_image"].dtype == np.uint8
        assert d["obs/state"].shape == (T, eps[0].states.shape[1]) and d["obs/state"].dtype == np.float32
        assert d["actions"].shape == (T, 7) and d["rewards"].shape == (T,) and d["dones"].dtype == np.uint8
        assert d["final_obs/front_image"].shape == (32, 32, 3) and d["progress"].shape == (T + 1,)
        assert d.attrs["num_samples"] == T and d.attrs["imperfection"] == "none" and bool(d.attrs["success"])
        assert json.loads(d.attrs["keyframe_names"]) == ["reach", "grasp", "lift"]
        # obs[t] is the observation before action t: the last stored obs is frame T-1
        np.testing.assert_array_equal(d["obs/state"][-1], eps[0].states[T - 1])


def _copy(path, tmp_path, name="copy.hdf5"):
    dst = tmp_path / name
    shutil.copyfile(path, dst)
    return dst


def test_truncated_file_is_a_clear_error(recorded, tmp_path):
    _, path = recorded
    dst = _copy(path, tmp_path)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(EpisodeFileError, match=r"copy\.hdf5.*(truncated|corrupt)"):
        read_episodes(dst)
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(EpisodeFileError, match="not a readable HDF5 episode file"):
        EpisodeFile(garbage)


def test_corrupt_chunk_is_detected_by_checksum(recorded, tmp_path):
    _, path = recorded
    dst = _copy(path, tmp_path)
    with h5py.File(dst, "r") as f:
        info = f["data/demo_1/actions"].id.get_chunk_info(0)
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff\x00\xff\x00")
    with EpisodeFile(dst) as ef:
        ef.read(0)  # the other demo is intact
        with pytest.raises(EpisodeFileError, match=r"demo_1/actions: corrupt data"):
            ef.read("demo_1")


def test_missing_keys_and_inconsistent_lengths(recorded, tmp_path):
    _, path = recorded
    dst = _copy(path, tmp_path, "missing.hdf5")
    with h5py.File(dst, "r+") as f:
        del f["data/demo_1/rewards"]
    with pytest.raises(EpisodeFileError, match=r"missing\.hdf5: demo_1/rewards: missing"):
        EpisodeFile(dst)
    dst = _copy(path, tmp_path, "short.hdf5")
    with h5py.File(dst, "r+") as f:
        p = f["data/demo_0/progress"][()]
        del f["data/demo_0/progress"]
        f["data/demo_0/progress"] = p[:-3]
    with pytest.raises(EpisodeFileError, match=r"demo_0/progress: shape .* inconsistent with T="):
        EpisodeFile(dst)
    dst = _copy(path, tmp_path, "noattr.hdf5")
    with h5py.File(dst, "r+") as f:
        del f.attrs["task_text"]
    with pytest.raises(EpisodeFileError, match=r"@task_text: missing attribute"):
        EpisodeFile(dst)
    dst = _copy(path, tmp_path, "badkf.hdf5")
    with h5py.File(dst, "r+") as f:
        f["data/demo_0"].attrs["keyframes"] = np.array([5, 5, 9], dtype=np.int64)
    with pytest.raises(EpisodeFileError, match=r"demo_0/keyframes: must be strictly increasing"):
        EpisodeFile(dst).read(0)
    with pytest.raises(FileNotFoundError):
        EpisodeFile(tmp_path / "nope.hdf5")


def test_views_and_stride(recorded):
    eps, path = recorded
    with pytest.raises(ValueError, match="unknown view 'wrist'; stored views: front"):
        read_episodes(path, views=["wrist"])
    none = read_episodes(path, views=[], demos=["demo_0"])[0]
    assert none.frames == {} and none.states.shape[0] == eps[0].num_frames
    ep = eps[0]
    s = read_episodes(path, stride=3, demos=[0])[0]
    T = ep.num_steps
    assert s.frame_index[0] == 0 and s.frame_index[-1] == T  # the final frame is always kept
    assert np.all(np.diff(s.frame_index) > 0) and np.all(np.diff(s.frame_index)[:-1] == 3)
    np.testing.assert_array_equal(s.frames["front"], ep.frames["front"][s.frame_index])
    np.testing.assert_array_equal(s.progress, ep.progress[s.frame_index])
    assert s.actions.shape[0] == s.frame_index.size - 1 and s.rewards.sum() == pytest.approx(ep.rewards.sum())
    # keyframes map to the first kept frame at or after them
    for k_old, k_new in zip(ep.keyframes, s.keyframes, strict=True):
        assert s.frame_index[k_new] >= k_old and s.frame_index[k_new] - k_old < 3
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        read_episodes(path, stride=0)
    # several files, states only or at a checked image size
    both = read_episodes([path, str(path)], views=())
    assert len(both) == 2 * len(eps) and all(e.frames == {} for e in both)
    np.testing.assert_array_equal(both[len(eps)].states, eps[0].states)
    assert len(read_episodes([path], views=["front"], image_size=32)) == len(eps)
    with pytest.raises(ValueError, match=r"frames are 32x32 px, expected 64x64"):
        read_episodes([path], image_size=64)
    with pytest.raises(FileNotFoundError, match="no episode files at"):
        read_episodes([path, path.parent / "a.hdf5", path.parent / "b.hdf5"])
    with pytest.raises(ValueError, match="merges keyframes"):
        subsample(ep, T)


def test_writer_is_atomic(recorded, tmp_path):
    eps, path = recorded
    out = tmp_path / "atomic.hdf5"
    with pytest.raises(RuntimeError, match="interrupted"):
        with EpisodeWriter(out, "lift", KWARGS, views=("front",), image_size=32) as w:
            w.add(eps[0])
            raise RuntimeError("interrupted")
    assert not out.exists() and os.listdir(tmp_path) == []
    shutil.copyfile(path, out)
    before = out.read_bytes()
    with pytest.raises(EpisodeFileError, match="frames are"):
        with EpisodeWriter(out, "lift", KWARGS, views=("front",), image_size=64) as w:
            w.add(eps[0])  # 32 px frames into a 64 px file
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["atomic.hdf5"]
    with pytest.raises(ValueError, match="unknown view 'back'"):
        EpisodeWriter(tmp_path / "x.hdf5", "lift", KWARGS, views=("back",), image_size=32)


def test_video_of_a_stored_episode(recorded, tmp_path):
    eps, path = recorded
    out = episode_file_video(path, "demo_0", tmp_path / "demo_0.mp4", fps=10)
    frames = _video_frames(out)
    assert len(frames) == eps[0].num_frames
    h, w = frames[0].shape[:2]
    assert h % 16 == 0 and w % 16 == 0 and h >= 192
    # the strip turns the sub-task colour on a keyframe: the frame at a keyframe differs from the one before
    k = int(eps[0].keyframes[0])
    strip = slice(192, 200)
    assert np.abs(frames[k][strip].astype(int) - frames[k - 1][strip].astype(int)).mean() > 20
    with pytest.raises(ValueError, match="unknown view 'side'"):
        write_episode_video(eps[0], tmp_path / "x.mp4", views=["side"])


def test_demos_job_writes_file_and_videos(tmp_path):
    from jobs.cli import main

    out = tmp_path / "d" / "lift.hdf5"
    rc = main(["demos", "task=lift", "n=2", "views=[front]", "image_size=32", f"out={out}", "seed=5",
               "video=true", "imperfections={none:1,stop:1}", "stop_steps=5", "post_success_steps=2"])
    assert rc == 0
    eps = read_episodes(out)
    assert sorted(e.imperfection for e in eps) == ["none", "stop"]
    assert [e.seed for e in eps] == [5, 6]
    clean = next(e for e in eps if e.imperfection == "none")
    stop = next(e for e in eps if e.imperfection == "stop")
    assert clean.success and clean.keyframes.size == 3
    assert not stop.success and stop.keyframes.size < 3
    videos = sorted(os.listdir(out.parent / "lift_videos"))
    assert videos == ["demo_0.mp4", "demo_1.mp4"]
    assert len(_video_frames(out.parent / "lift_videos" / "demo_0.mp4")) == eps[0].num_frames
    assert [p for p in os.listdir(out.parent) if p.startswith(".")] == []  # no temporary files left
    with pytest.raises(SystemExit, match="no scripted expert for task 'cartpole-swingup'"):
        main(["demos", "task=cartpole-swingup", f"out={tmp_path / 'x.hdf5'}"])
    assert not (tmp_path / "x.hdf5").exists()
