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


def test_one_json_reader_for_checkpoints_and_policies(run_dir, tmp_path):
    """Checkpoint config, training state and deployment policy files share read_json's checks and messages."""
    import shutil

    from control.checkpoint import CheckpointError, load_checkpoint, read_json
    from control.export import PolicyFileError, load_policy

    ck = tmp_path / "ck"
    shutil.copytree(run_dir / "checkpoints" / "step_000000050", ck)
    cfg_file = ck / "pretrained_model" / "config.json"
    info = json.loads(cfg_file.read_text())
    for bad, message in (({**info, "format": "other"}, r"config\.json is not a dopa-checkpoint file \(format='other'\)"),
                         ({**info, "version": 7}, r"config\.json has version 7; this code reads version 1"),
                         ([1, 2], r"config\.json is not a dopa-checkpoint file \(format=None\)")):
        cfg_file.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(ck)
    cfg_file.write_text(json.dumps(info))
    (ck / "training_state" / "loop.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint file .*loop\.json: "):
        load_checkpoint(ck).training_state("loop")

    pol_file = ck / "deploy" / "policy.json"
    meta = json.loads(pol_file.read_text())
    assert load_policy(ck / "deploy").action_dim == 1
    for text, message in (("{", r"corrupt .*policy\.json: "),
                          (json.dumps({**meta, "format": "x"}), r"policy\.json is not a dopa-policy file \(format='x'\)"),
                          (json.dumps({**meta, "version": 2}), r"policy\.json has version 2; this code reads version 1")):
        pol_file.write_text(text)
        with pytest.raises(PolicyFileError, match=message):
            load_policy(ck / "deploy")
    with pytest.raises(PolicyFileError, match=r"missing\.json is missing"):
        read_json(tmp_path / "missing.json", PolicyFileError)
