"""Checkpoint files from the user's side: ``dopa eval`` output paths, the shared JSON reader,
and ``dopa train resume=`` with the run's own stored config as the base."""

from __future__ import annotations

import json

import pytest
import torch

from jobs.cli import compose, main

TINY = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "reward=state", "progress=false", "log_every=25",
        "learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
        "learner.buffer_size=1000", "preset=none", "eval.every=0", "checkpoint_every=50", "seed=3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny SAC run of 100 env steps on cartpole with checkpoints at 50 and 100."""
    from jobs.train import train_from_config as train

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

    from basics.state import read_json
    from control.checkpoint import CheckpointError, load_checkpoint
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


def _read_weights(ck):
    from safetensors.torch import load_file

    return load_file(str(ck / "pretrained_model" / "model.safetensors"))


def test_resume_continues_the_run_as_configured(run_dir, tmp_path, monkeypatch, capsys):
    """`dopa train resume=<checkpoint>` with no repeated overrides: the run's stored config is the base
    (SAC on cartpole, batch 8, ... although the defaults are EXPO on Lift), total_steps may grow."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "resumed"
    assert main(["train", f"resume={run_dir / 'checkpoints' / 'step_000000050'}", "total_steps=150",
                 f"run_dir={out}"]) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())
    stored = json.loads((run_dir / "config.json").read_text())
    assert cfg["total_steps"] == 150 and cfg["run_dir"] == str(out)
    assert cfg["learner"] == stored["learner"] and cfg["env"] == stored["env"] and cfg["seed"] == 3
    # bit-exact: the resumed run's step-100 weights equal the uninterrupted run's
    a, b = _read_weights(run_dir / "checkpoints" / "step_000000100"), _read_weights(out / "checkpoints" / "step_000000100")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "checkpoints" / "step_000000150").is_dir()


def test_resume_refuses_changes_of_fixed_keys_in_one_line(run_dir, capsys):
    from jobs.train import compose_config

    ck = run_dir / "checkpoints" / "step_000000100"
    for over, detail in ((["learner.batch_size=16"], "learner.batch_size: 8 -> 16"),
                         (["env=reacher-easy"], "env.name: 'cartpole-swingup' -> 'reacher-easy'"),
                         (["seed=4", "eval.every=50"], "seed: 3 -> 4")):
        assert main(["train", f"resume={ck}", *over]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("dopa train: error: cannot resume") and detail in err, err
        assert "eval.every" not in err.split("Keys allowed")[0]  # a safe key is not refused
    # the old way (repeating the run's overrides) still works; safe keys are applied
    cfg = compose_config([*TINY, f"resume={ck}", "total_steps=100", "eval.every=50", "log_every=10"])
    stored = json.loads((run_dir / "config.json").read_text())
    assert cfg.eval.every == 50 and cfg.log_every == 10 and cfg.learner.batch_size == 8
    assert cfg.learner._target_ == stored["learner"]["_target_"] == "control.sac.SACConfig"
    # no overrides: exactly the stored config (but resume)
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(compose_config([f"resume={run_dir}"]))
    assert {k: v for k, v in plain.items() if k != "resume"} == {k: v for k, v in stored.items() if k != "resume"}


def test_resume_config_rules():
    from jobs.train import given_keys, resume_config

    stored = {"total_steps": 100, "seed": 0, "learner": {"total_steps": 100, "lr": 1e-3}, "eval": {"every": 10}}
    given = {"total_steps": 200, "seed": 5, "learner": {"lr": 3e-4}, "eval": {"every": 20}}
    out = resume_config(stored, given, {"total_steps", "eval.every"})
    # total_steps and eval.every from the overrides, learner.total_steps follows total_steps (an
    # interpolation in configs/learner/ppo.yaml), the rest (seed, learner.lr) stays the run's
    assert out == {"total_steps": 200, "seed": 0, "learner": {"total_steps": 200, "lr": 1e-3}, "eval": {"every": 20}}
    assert stored["total_steps"] == 100  # not modified in place
    with pytest.raises(ValueError, match=r"learner\.lr: 0\.001 -> 0\.0003; seed: 0 -> 5\. Leave them out"):
        resume_config(stored, given, {"seed", "learner.lr", "total_steps"})
    # a named group sets every key under it; a preset's changes count as set
    keys = given_keys(["learner=sac", "total_steps=5"], {"learner": {"a": 1, "b": 2}, "total_steps": 1, "x": 0},
                      {"learner": {"a": 1, "b": 3}, "total_steps": 5, "x": 1})
    assert keys == {"learner.a", "learner.b", "total_steps", "x"}
