"""Bring your own task: train, adapt and evaluate on episode files of tasks the stack has no
simulation for, made here from frames and a task text (no ground-truth progress), with and
without keyframes; references never come from the data under evaluation."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from jobs.cli import main
from reward_models.grm import load_checkpoint
from sim.episodes import Episode, EpisodeWriter, read_episodes

SIZE = 32
VIEWS = ("front", "wrist")
TINY = ["model.channels=[8,16,16,16]", "model.width=32", "model.depth=1", "model.heads=2", "model.hop_bins=21"]


def _episode(direction: str, reach: float, n: int, seed: int) -> Episode:
    """A block sliding from one side toward the other over ``n`` frames, covering ``reach`` of the
    way (1: it arrives, a success); the wrist view is the front view mirrored."""
    frames = np.full((n, SIZE, SIZE, 3), 25, np.uint8)
    frames[:, -4:] = (90, 90, 90)  # a floor line: the scene's fixed part
    for t in range(n):
        p = int(round(20 * reach * t / (n - 1)))
        r, c = (12, 2 + p) if direction == "right" else (22 - p, 12)
        frames[t, r:r + 8, c:c + 8] = (230, 40, 40)
    t = n - 1
    return Episode(frames={"front": frames, "wrist": frames[:, :, ::-1].copy()}, states=np.zeros((n, 0), np.float32),
                   actions=np.zeros((t, 0), np.float32), rewards=np.zeros(t, np.float32),
                   dones=np.eye(1, t, t - 1, dtype=np.uint8)[0], progress=None, keyframes=np.zeros(0, np.int64),
                   keyframe_names=[], success=reach >= 1.0, imperfection="unknown", seed=seed)


def _file(path, task, text, direction, reaches, n=12, drop_text=False):
    with EpisodeWriter(path, task, {}, VIEWS, SIZE, task_text=text) as w:
        for i, r in enumerate(reaches):
            w.add(_episode(direction, r, n + i % 3, i))
    if drop_text:
        with h5py.File(path, "r+") as f:
            del f.attrs["task_text"]
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    base = tmp_path_factory.mktemp("byot")
    push = _file(base / "push.hdf5", "push-right", "push the block to the right", "right", [1, 1, 1, 0.5])
    out = base / "grm"
    assert main(["reward-train", f"data=[{push}]", f"out={out}", "steps=60", "batch_size=16", "lr=3e-3", "threads=1",
                 "save_every=100", f"text_cache={base / 'tc'}", *TINY]) == 0
    return base, push, out


def test_adapt_and_eval_unknown_task(pretrained, capsys):
    base, push, ck = pretrained
    # a task no simulation has, its file without a task text (task= gives it) and without progress
    demo = _file(base / "raise.hdf5", "raise-block", "lift it", "up", [1], n=14, drop_text=True)
    held = _file(base / "raise_test.hdf5", "raise-block", "raise the block", "up", [1, 1, 0.4, 0.3])
    push_test = _file(base / "push_test.hdf5", "push-right", "push the block to the right", "right", [1, 1, 0.4])
    common = [f"checkpoint={ck}", f"demo={demo}", "steps=40", "batch_size=8", "threads=1", f"text_cache={base / 'tc'}",
              f"eval_data=[{held},{push_test}]"]
    capsys.readouterr()
    assert main(["reward-adapt", *common, f"out={base / 'a'}"]) == 1  # no task text anywhere: one line
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "have no task text" in err and "task=" in err
    assert main(["reward-adapt", *common, "task='raise the block'", f"out={base / 'a'}"]) == 0
    out = capsys.readouterr().out
    assert "time-uniform" in out and "rehearsing" in out and "push-right" in out
    summary = json.loads((base / "a" / "adapt.json").read_text())
    assert summary["task"] == "raise-block" and summary["labels"] == "time-uniform"
    assert summary["replay_tasks"] == ["push-right"] and summary["eval_episodes"] == 4
    # before and after on every task of eval_data: the new one and the pretrained one
    assert set(summary["tasks"]) == {"raise-block", "push-right"}
    for t in summary["tasks"].values():
        for when in ("before", "after"):
            assert 0.0 <= t[when]["completion_accuracy"] <= 1.0 and t[when]["mae"] is None  # no ground truth
    _, meta = load_checkpoint(base / "a" / "checkpoint")
    assert meta["references"]["raise-block"]["text"] == "raise the block" and "push-right" in meta["references"]

    # with keyframes given on the command line (two sub-tasks of the demonstration)
    assert main(["reward-adapt", *common, "task='raise the block'", "keyframes=[5,13]", "replay_share=0",
                 f"out={base / 'b'}"]) == 0
    summary = json.loads((base / "b" / "adapt.json").read_text())
    assert summary["labels"] == "keyframes" and summary["replay_tasks"] == [] and summary["replay_share"] == 0.0
    capsys.readouterr()
    assert main(["reward-adapt", *common, "task=x", "keyframes=[5,30]", f"out={base / 'c'}"]) == 1
    assert "keyframes[0] (raise-block demo_0) must be strictly increasing frame indices in [1, 13]" in \
        capsys.readouterr().err

    # reward-eval on the adapted checkpoint: VOC and completion against the success flags, MAE skipped (said so)
    ev = base / "eval"
    assert main(["reward-eval", f"checkpoint={base / 'a' / 'checkpoint'}", f"data=[{held}]", f"out={ev}",
                 "threads=1"]) == 0
    out = capsys.readouterr().out
    assert "raise-block: mae skipped: no episode has ground-truth progress" in out and "anchors off" in out
    m = json.loads((ev / "metrics.json").read_text())["raise-block"]
    assert m["episodes"] == 4 and m["successful"] == 2 and -1 <= m["voc"] <= 1 and m["mae"] is None
    assert isinstance(m["anchors_off"], int) and len(m["anchors_off_episodes"]) == m["anchors_off"]


def test_eval_references_never_from_the_data(pretrained, capsys, tmp_path):
    base, push, ck = pretrained
    other = _file(tmp_path / "wave.hdf5", "wave", "wave the block", "up", [1, 0.5])
    capsys.readouterr()
    assert main(["reward-eval", f"checkpoint={ck}", f"data=[{other}]", f"out={tmp_path / 'e'}", "threads=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no reference start/goal frames for task 'wave'" in err and "reference=" in err
    assert not (tmp_path / "e" / "metrics.json").exists()
    ref = _file(tmp_path / "wave_ref.hdf5", "wave", "wave the block", "up", [1])
    assert main(["reward-eval", f"checkpoint={ck}", f"data=[{other}]", f"reference={ref}", f"out={tmp_path / 'e'}",
                 "threads=1"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())["wave"]
    assert m["episodes"] == 2 and m["successful"] == 1
    eps = read_episodes(other)
    assert eps[0].progress is None and eps[0].task == "wave"


def test_adaptation_with_ce_trains_the_demonstrations_hop_distribution(pretrained):
    """loss=ce+mse: the demonstration's pairs train the hop distribution, not only its mean, so the
    two-hot cross-entropy on them ends lower than after MSE-only adaptation (same model, seed, steps)."""
    import torch

    from reward_models.adapt import adapt
    from reward_models.pairs import HopData
    from reward_models.text import text_embeddings

    base, push, ck = pretrained
    demo = read_episodes(_file(base / "raise_ce.hdf5", "raise-block", "raise the block", "up", [1], n=14),
                         views=VIEWS)[0]
    ce = {}
    for loss in ("mse", "ce+mse"):
        model, meta = load_checkpoint(ck)
        adapt(model, meta, demo, steps=60, batch_size=8, lr=3e-3, seed=0, text_cache=base / "tc",
              progress_bar=False, loss=loss)
        data = HopData([demo], model.views, model.config.reference_view,
                       text_embeddings([demo.task_text], base / "tc"), replace_prob=0.0, seed=7)
        model.eval()
        with torch.no_grad():
            b = data.batch(64)
            out = model(b["text_emb"], b["ref_start"], b["ref_goal"], b["before"], b["after"])
            ce[loss] = float(model.loss(out, b["hop"], mse_weight=0.0)[0])
    assert ce["ce+mse"] < 0.9 * ce["mse"], ce
    with pytest.raises(ValueError, match="unknown loss 'ce'"):
        adapt(*load_checkpoint(ck), demo, steps=1, batch_size=2, text_cache=base / "tc", progress_bar=False, loss="ce")
