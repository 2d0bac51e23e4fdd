"""Checkpoint files from the user's side: ``dopa eval`` output paths, the shared JSON reader,
and ``dopa train resume=`` with the run's own stored config as the base."""

from __future__ import annotations

import json

import pytest
import torch

from control.cli import compose, main

TINY = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "reward=state", "progress=false", "log_every=25",
        "learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
        "learner.buffer_size=1000", "preset=none", "eval.every=0", "checkpoint_every=50", "seed=3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny SAC run of 100 env steps on cartpole with checkpoints at 50 and 100."""
    from control.train import train

    d = tmp_path_factory.mktemp("ck") / "run"
    train(compose("train", [*TINY, "total_steps=100", f"run_dir={d}"]))
    assert (d / "checkpoints" / "step_000000050").is_dir() and (d / "checkpoints" / "step_000000100").is_dir()
    return d


def test_eval_creates_a_new_nested_out_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "some" / "new" / "nested" / "eval.json"
    assert main(["eval", f"checkpoint={run_dir}", "episodes=2", f"out={out}"]) == 0
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and res["step"] == 100 and len(res["returns"]) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.json"]  # no temp file left
    # a folder given as out: one clear line, nothing written
    (tmp_path / "adir").mkdir()
    assert main(["eval", f"checkpoint={run_dir}", "episodes=1", f"out={tmp_path / 'adir'}"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert not list((tmp_path / "adir").iterdir())
