"""The training loop end to end on small real tasks: exact resume, checkpoints and their errors,
TensorBoard reward terms, deployment export, ``dopa eval`` and rendering-based potentials."""

import json
import shutil

import numpy as np
import pytest
import torch

from control.checkpoint import CheckpointError, load_checkpoint
from control.cli import compose
from control.train import train

TINY = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "progress=false", "log_every=25"]
SAC_TINY = ["learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
            "learner.buffer_size=1000"]
PPO_TINY = ["learner=ppo", "learner.num_steps=10", "learner.num_minibatches=2", "learner.update_epochs=2",
            "learner.hidden=[16,16]"]


def _cfg(tmp, *overrides):
    return compose("train", [*TINY, f"run_dir={tmp}", *overrides])


def _weights(learner):
    return {f"{n}.{k}": v.clone() for n, m in learner.networks().items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("learner", [SAC_TINY, PPO_TINY], ids=["sac", "ppo"])
def test_resume_equals_uninterrupted_run(tmp_path, learner):
    common = [*learner, "num_envs=2", "checkpoint_every=50", "eval.every=0", "reward=state"]
    full = train(_cfg(tmp_path / "full", *common, "total_steps=100"))
    half = train(_cfg(tmp_path / "half", *common, "total_steps=50"))
    ckpt = tmp_path / "half" / "checkpoints" / "step_000000050"
    assert ckpt.is_dir()
    resumed = train(_cfg(tmp_path / "half", *common, "total_steps=100", f"resume={ckpt}"))
    assert resumed["env_steps"] == 100
    a, b = _weights(full["learner"]), _weights(resumed["learner"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the second half really trained: the weights moved on from the checkpoint
    mid = _weights(half["learner"])
    assert any(not torch.equal(mid[k], a[k]) for k in a)


def test_checkpoint_layout_tensorboard_terms_and_eval_job(tmp_path):
    out = train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=50", "checkpoint_every=50", "eval.every=50",
                     "eval.episodes=3", "reward=state"))
    ck = tmp_path / "run" / "checkpoints" / "step_000000050"
    for rel in ("pretrained_model/model.safetensors", "pretrained_model/config.json",
                "training_state/learner.safetensors", "training_state/loop.json", "training_state/shaping.json",
                "deploy/policy.safetensors", "deploy/policy.json"):
        assert (ck / rel).is_file(), rel
    info = json.loads((ck / "pretrained_model" / "config.json").read_text())
    assert info["env"]["state_dim"] == 5 and info["config"]["learner"]["_target_"] == "control.sac.SAC"
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temp folders left behind

    # every reward term is its own TensorBoard scalar, plus the evaluation with its interval
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("reward/task", "reward/shaping", "reward/gold", "reward/progress", "reward/total",
                "eval/success_rate", "eval/success_ci_high", "eval/return_mean"):
        assert tag in tags, tag
    shaping = [e.value for e in acc.Scalars("reward/shaping")]
    assert any(v != 0.0 for v in shaping)

    # the deployment policy acts like the learner's deterministic policy
    from control.export import load_policy

    pol = load_policy(ck / "deploy")
    s = torch.randn(4, 5)
    ref = out["learner"].act(s, deterministic=True)
    got = torch.stack([torch.from_numpy(pol.act(s[i].numpy()))[0] for i in range(4)])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)

    # dopa eval: same routine, same seeds -> same numbers as training's last evaluation
    from control.cli import main

    train_eval = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()][-1]
    for policy in ("deploy", "learner"):
        assert main(["eval", f"checkpoint={tmp_path / 'run'}", "episodes=3", f"policy={policy}",
                     f"out={tmp_path / f'eval_{policy}.json'}"]) == 0
        res = json.loads((tmp_path / f"eval_{policy}.json").read_text())
        assert res["seeds"] == train_eval["seeds"] and res["successes"] == train_eval["successes"]
        np.testing.assert_allclose(res["returns"], train_eval["returns"], rtol=1e-4, atol=1e-4)
        assert 0.0 <= res["success_ci"][0] <= res["success_rate"] <= res["success_ci"][1] <= 1.0


def test_bad_checkpoints_and_resume_config(tmp_path):
    train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=50", "checkpoint_every=50", "eval.every=0"))
    ck = tmp_path / "run" / "checkpoints" / "step_000000050"

    # another env with other shapes: both shapes named
    with pytest.raises(ValueError, match=r"state shape \(5,\) and action shape \(1,\).*'reacher-easy' has state "
                                         r"shape \(6,\) and action shape \(2,\)"):
        train(compose("train", ["env=reacher-easy", "progress=false", *SAC_TINY, "total_steps=100",
                                "checkpoint_every=50", "eval.every=0", f"resume={ck}"]))
    # a changed fixed key is refused with its old and new value; total_steps may change
    with pytest.raises(ValueError, match=r"learner\.batch_size: 8 -> 16.*Keys allowed to change: total_steps"):
        train(_cfg(tmp_path / "run", *SAC_TINY, "learner.batch_size=16", "total_steps=100", "checkpoint_every=50",
                   "eval.every=0", f"resume={ck}"))
    # missing and corrupt checkpoints
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(ck, bad)
    (bad / "pretrained_model" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*config.json"):
        load_checkpoint(bad)
    bad2 = tmp_path / "bad2"
    shutil.copytree(ck, bad2)
    (bad2 / "training_state" / "learner.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*learner.safetensors"):
        train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=100", "checkpoint_every=50", "eval.every=0",
                   f"resume={bad2}"))
    (bad2 / "training_state" / "loop.json").unlink()
    with pytest.raises(CheckpointError, match="loop.json is missing"):
        load_checkpoint(bad2).training_state("loop")
    # the CLI turns these into a clear exit message
    from control.cli import main

    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", f"checkpoint={tmp_path / 'nope'}"])


class FrontBrightnessPotential:
    """A rendering-based potential for tests: Phi = mean brightness of the front view."""

    views = ("front",)

    def __init__(self):
        self.resets = 0
        self.calls = 0

    def reset(self, env_ids, obs):
        assert obs["images"]["front"].dtype == torch.uint8
        self.resets += int(env_ids.numel())

    def __call__(self, obs):
        self.calls += 1
        img = obs["images"]["front"].float()
        phi = img.mean(dim=(1, 2, 3)) / 255.0
        return phi, phi >= 0.95

    def state_dict(self):
        return {"resets": self.resets, "calls": self.calls}

    def load_state_dict(self, state):
        self.resets, self.calls = int(state["resets"]), int(state["calls"])


@pytest.mark.parametrize("query_every", [1, 5])
def test_rendering_potential_in_the_loop(tmp_path, query_every):
    out = train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=50", "checkpoint_every=50", "eval.every=0",
                     "reward=grm", "reward.checkpoint=unused", "reward.potential._target_=test_train.FrontBrightnessPotential",
                     "~reward.potential.checkpoint", "env.image_size=16", f"reward.query_every={query_every}"))
    assert out["env_steps"] == 50
    # the potential's statistics are checkpointed: 3 episode starts (0, 25, 50); one query at the
    # start, one per query step, one per episode reset
    state = load_checkpoint(tmp_path / "run").training_state("shaping")
    assert state["potential"]["resets"] == 3
    assert state["potential"]["calls"] == 1 + 50 // query_every + 2
