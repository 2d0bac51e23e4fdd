"""The training loop end to end on small real tasks: exact resume, checkpoints and their errors,
TensorBoard reward terms, deployment export, ``dopa eval`` and rendering-based potentials."""

import json
import shutil

import numpy as np
import pytest
import torch

from control.callbacks import Callback
from control.checkpoint import CheckpointError, load_checkpoint
from jobs.cli import compose
from jobs.train import train_from_config as train

TINY = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "reward=dense", "progress=false", "log_every=25"]
SAC_TINY = ["learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
            "learner.buffer_size=1000"]
PPO_TINY = ["learner=ppo", "learner.num_steps=10", "learner.num_minibatches=2", "learner.update_epochs=2",
            "learner.hidden=[16,16]"]


def _cfg(tmp, *overrides):
    return compose("train", [*TINY, f"run_dir={tmp}", *overrides])


def _weights(learner):
    return {f"{n}.{k}": v.clone() for n, m in learner.networks().items() for k, v in m.state_dict().items()}


RENDER_POTENTIAL = ["reward=grm", "reward.checkpoint=unused", "~reward.potential.checkpoint", "~reward.potential.fusion",
                    "reward.potential._target_=test_train.FrontBrightnessPotential", "env.image_size=16"]


@pytest.mark.parametrize("learner, reward", [(SAC_TINY, ["reward=state"]), (PPO_TINY, ["reward=state"]),
                                             (SAC_TINY, [*RENDER_POTENTIAL, "reward.query_every=4"])],
                         ids=["sac", "ppo", "sac-rendered-potential"])
def test_resume_equals_uninterrupted_run(tmp_path, learner, reward):
    common = [*learner, "num_envs=2", "checkpoint_every=50", "eval.every=0", *reward]
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
                     "eval.episodes=3", "reward=state", "eval.video=true", "env.image_size=16",
                     "eval.video_size=32"))
    ck = tmp_path / "run" / "checkpoints" / "step_000000050"
    for rel in ("pretrained_model/model.safetensors", "pretrained_model/config.json",
                "training_state/learner.safetensors", "training_state/loop.json", "training_state/shaping.json",
                "deploy/policy.safetensors", "deploy/policy.json"):
        assert (ck / rel).is_file(), rel
    info = json.loads((ck / "pretrained_model" / "config.json").read_text())
    assert info["env"]["state_dim"] == 5 and info["config"]["learner"]["_target_"] == "control.sac.SACConfig"
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temp folders left behind

    # the evaluation video: one frame per step of the first 25-step episode, at eval.video_size
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "run" / "videos" / "step_000000050.mp4")
    assert len(frames) == 25 and frames[0].shape == (32, 32, 3)

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
    from jobs.cli import main

    train_eval = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()][-1]
    for policy in ("deploy", "learner"):
        assert main(["eval", f"checkpoint={tmp_path / 'run'}", "episodes=3", f"policy={policy}",
                     f"out={tmp_path / f'eval_{policy}.json'}"]) == 0
        res = json.loads((tmp_path / f"eval_{policy}.json").read_text())
        assert res["seeds"] == train_eval["seeds"] and res["successes"] == train_eval["successes"]
        np.testing.assert_allclose(res["returns"], train_eval["returns"], rtol=1e-4, atol=1e-4)
        assert 0.0 <= res["success_ci"][0] <= res["success_rate"] <= res["success_ci"][1] <= 1.0


def test_bad_checkpoints_and_resume_config(tmp_path, capsys):
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
    from jobs.cli import main

    assert main(["eval", f"checkpoint={tmp_path / 'nope'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="dopa train: error: checkpoint .*nope.* does not exist"):
        main(["train", f"resume={tmp_path / 'nope'}", "progress=false"])
    with pytest.raises(SystemExit, match="dopa train: error: unknown reward mode 'bogus'; known: sparse, dense, potential, naive"):
        main(["train", "reward.mode=bogus", "progress=false", f"run_dir={tmp_path / 'r2'}"])


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


class RandomInitPotential(FrontBrightnessPotential):
    """FrontBrightnessPotential that draws from torch's global stream when built, as a GRM's
    module initialisation does before its checkpoint loads."""

    def __init__(self):
        super().__init__()
        self.noise = torch.randn(1000)


def test_building_the_reward_leaves_the_learners_random_stream_alone(tmp_path):
    """A reward whose models draw random numbers when built does not shift the learner's stream:
    after setup, torch's global generator is where a sparse-reward run of the same seed has it."""
    from jobs.train import setup

    states = []
    for name, reward in (("sparse", ["reward=sparse"]),
                         ("drawing", [*RENDER_POTENTIAL, "reward.potential._target_=test_train.RandomInitPotential"])):
        pieces = setup(_cfg(tmp_path / name, *SAC_TINY, "total_steps=10", "eval.every=0", *reward))
        states.append(torch.random.get_rng_state())
        pieces.env.close()
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize("query_every", [1, 5])
def test_rendering_potential_in_the_loop(tmp_path, query_every):
    out = train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=50", "checkpoint_every=50", "eval.every=0",
                     *RENDER_POTENTIAL, f"reward.query_every={query_every}"))
    assert out["env_steps"] == 50
    # the potential's statistics are checkpointed: 3 episode starts (0, 25, 50); one query at the
    # start, one per query step, one per episode reset
    state = load_checkpoint(tmp_path / "run").training_state("shaping")
    assert state["potential"]["resets"] == 3
    assert state["potential"]["calls"] == 1 + 50 // query_every + 2


def test_deploy_policy_files_and_bad_input(tmp_path):
    from control.export import MLPPolicy, PolicyFileError, load_policy, save_policy

    torch.manual_seed(0)
    module = MLPPolicy(5, 2, hidden=[8], action_horizon=3)
    meta = {"kind": "mlp", "task": "cartpole-swingup", "controller": None, "state_dim": 5, "action_dim": 2,
            "action_horizon": 3, "state_layout": [["position", 3], ["velocity", 2]], "views": ["front"],
            "image_size": 16, "obs_normalizer": {"mean": [0.0] * 5, "std": [2.0] * 5}}
    save_policy(tmp_path / "p", module, meta)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["policy.json", "policy.safetensors"]
    pol = load_policy(tmp_path / "p")
    img = {"front": np.zeros((16, 16, 3), np.uint8)}
    s = np.arange(5, dtype=np.float32)
    chunk = pol.act(s, img)
    assert chunk.shape == (3, 2) and chunk.dtype == np.float32
    with torch.no_grad():
        ref = module(torch.from_numpy(s)[None] / 2.0).numpy()[0]
    np.testing.assert_allclose(chunk, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"state shape \(4,\) does not match the policy's \(5,\)"):
        pol.act(np.zeros(4, np.float32), img)
    with pytest.raises(ValueError, match=r"NaN or inf at indices \[2\]"):
        pol.act(np.array([0, 0, np.nan, 0, 0], np.float32), img)
    with pytest.raises(ValueError, match="missing view 'front'"):
        pol.act(s, {"wrist": img["front"]})
    with pytest.raises(ValueError, match=r"uint8 \[16, 16, 3\]"):
        pol.act(s, {"front": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match="lacks \\['action_horizon'"):
        save_policy(tmp_path / "q", module, {k: v for k, v in meta.items() if k != "action_horizon"})
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_policy(tmp_path / "missing")
    cfg = json.loads((tmp_path / "p" / "policy.json").read_text())
    cfg["arch"]["hidden"] = [9]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(cfg))
    with pytest.raises(PolicyFileError, match=r"'trunk.0.weight' has shape \(8, 5\), the architecture expects \(9, 5\)"):
        load_policy(tmp_path / "p")
    cfg["meta"]["kind"] = "nope"
    (tmp_path / "p" / "policy.json").write_text(json.dumps(cfg))
    with pytest.raises(PolicyFileError, match="unknown policy kind 'nope'; registered kinds: .*mlp"):
        load_policy(tmp_path / "p")
    (tmp_path / "p" / "policy.safetensors").write_bytes(b"junk")
    cfg["meta"]["kind"], cfg["arch"]["hidden"] = "mlp", [8]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(cfg))
    with pytest.raises(PolicyFileError, match="corrupt weights file"):
        load_policy(tmp_path / "p")


def test_evaluation_video_is_rendered_at_its_own_size(tmp_path):
    """The video frames come at eval.video_size while the policy sees image_size observations."""
    import imageio.v3 as iio

    import sim
    from control.evaluate import evaluate

    env = sim.make_env("cartpole-swingup", num_envs=2, views=["front"], image_size=24, seed=0, max_episode_steps=12)
    seen = []

    def policy(obs):
        seen.append(tuple(obs["images"]["front"].shape))
        return torch.zeros(2, 1)

    try:
        res = evaluate(env, policy, seed=5, video_path=tmp_path / "v.mp4", video_size=48)
    finally:
        env.close()
    frames = iio.imread(tmp_path / "v.mp4")
    assert res["episodes"] == 2 and set(seen) == {(2, 24, 24, 3)}
    assert frames.shape[1:] == (48, 48, 3) and frames.shape[0] == 12


class _Probe(Callback):
    """Records, at each evaluation, whether EXPO's behaviour cloning had run."""

    def __init__(self):
        self.run, self.seen = None, []

    def on_start(self, run):
        self.run = run

    def on_eval(self, env_steps, result):
        self.seen.append((env_steps, bool(self.run.learner.pretrained)))


def test_evaluation_before_online_learning_and_oracle_reward(tmp_path, capsys):
    """EXPO behaviour-cloned on one scripted Lift demonstration, reward=oracle (the simulator's
    progress: the job builds the env with it): the policy is evaluated at env step 0 after the
    cloning, by the same routine and seeds as the last evaluation; both figures are printed with
    their intervals and logged to TensorBoard."""
    from jobs.cli import main
    from jobs.train import report

    demos = tmp_path / "lift.hdf5"
    assert main(["demos", "task=lift", "n=1", "views=[]", f"out={demos}"]) == 0
    cfg = compose("train", ["env=lift", "preset=none", "reward=oracle", "learner=expo_cpu", f"offline_data=[{demos}]",
                            "+env.kwargs.max_episode_steps=8", "total_steps=16", "checkpoint_every=16",
                            "eval.every=16", "eval.episodes=2", "progress=false", "log_every=8",
                            f"run_dir={tmp_path / 'run'}", "learner.pretrain_steps=5", "learner.start_training=8",
                            "learner.batch_size=8", "learner.num_qs=2", "learner.critic_hidden_dims=[16,16]",
                            "learner.edit_hidden_dims=[16,16]", "learner.base_hidden_dim=16",
                            "learner.base_num_blocks=1"])
    assert cfg.eval.at_start is True  # the default
    probe = _Probe()
    out = train(cfg, callbacks=[probe])
    assert "progress" in probe.run.env.observation_space.spaces  # built for the oracle potential
    assert probe.seen == [(0, True), (16, True)]  # the step-0 evaluation saw the behaviour-cloned policy
    first, last = out["first_eval"], out["last_eval"]
    assert first["env_steps"] == 0 and last["env_steps"] == 16 and first["seeds"] == last["seeds"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in lines] == [0, 16]
    report(out)
    text = capsys.readouterr().out
    assert "before online learning (env step 0, after any behaviour cloning): success " in text
    assert "after online learning (env step 16): success " in text and "over 2 episodes" in text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/success_rate")] == [0, 16]
    gain = acc.Scalars("eval/success_gain")
    assert [e.step for e in gain] == [16]
    assert gain[0].value == pytest.approx(last["success_rate"] - first["success_rate"])
    assert {"eval/before_online/text_summary", "eval/online_learning/text_summary"} <= set(acc.Tags()["tensors"])
    assert any(v.value > 0 for v in acc.Scalars("reward/progress"))  # the oracle's Phi reached the learner


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_loop_statistics_follow_the_env_device(device):
    """Rewards of a GPU env (MuJoCo Warp on CUDA) stay on the GPU: the loop's episode sums follow them."""
    from control.train import _Stats

    stats = _Stats(num_envs=3, step=0)
    r = torch.tensor([1.0, 2.0, 3.0], device=device)
    done = torch.tensor([False, True, False], device=device)
    success = torch.tensor([False, True, False], device=device)
    stats.add(r, 2 * r, {"reward": 2 * r}, torch.zeros(3, dtype=torch.bool, device=device), success, {})
    stats.add(r, 2 * r, {"reward": 2 * r}, done, success, {})
    assert stats.recent == [(4.0, 8.0, True)]
    assert stats.ep_return.device.type == device and stats.ep_return.tolist() == [2.0, 0.0, 6.0]


def test_learner_metrics_keep_the_latest_value_of_each_key_once():
    """A metric reported once (GoRL's refit fidelity) is still logged at the next report after later
    updates that do not report it; a key reported again takes its new value; a report clears them, so
    a rare metric is not repeated in every later period as if it were measured again."""
    from types import SimpleNamespace

    from control.train import _Stats

    stats = _Stats(num_envs=1, step=0)
    z, f = torch.zeros(1), torch.zeros(1, dtype=torch.bool)
    stats.add(z, z, {}, f, f, {"loss": 1.0, "gorl/refit_action_mean_err": 0.01})
    stats.add(z, z, {}, f, f, {"loss": 0.5})
    stats.add(z, z, {}, f, f, {})
    run = SimpleNamespace(env=SimpleNamespace(num_envs=1), step=3, learner=SimpleNamespace(extra_env_steps=lambda: 0))
    first = stats.scalars(run)
    assert {k: v for k, v in first.items() if k.startswith("learner/")} == {
        "learner/loss": 0.5, "learner/gorl/refit_action_mean_err": 0.01}
    stats.add(z, z, {}, f, f, {"loss": 0.25})
    second = stats.scalars(run)
    assert {k: v for k, v in second.items() if k.startswith("learner/")} == {"learner/loss": 0.25}


def test_best_checkpoint_link_follows_the_evaluations(tmp_path, capsys):
    """``checkpoints/best`` links the checkpoint whose evaluation had the highest success (ties: the
    higher return, then the later step), survives ``checkpoint_keep`` pruning, deploys, and the
    job's report names it when it is not the last."""
    from control.callbacks import Checkpoints, Run
    from jobs.deploy import policy_path
    from jobs.train import report

    # a real run: every checkpoint evaluated, only the newest kept besides the best
    out = train(_cfg(tmp_path / "run", *SAC_TINY, "total_steps=100", "checkpoint_every=25", "eval.every=25",
                     "eval.episodes=2", "eval.at_start=false", "checkpoint_keep=1", "reward=state"))
    folder = tmp_path / "run" / "checkpoints"
    evals = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    want = max(evals, key=lambda r: (r["success_rate"], r["return_mean"], r["env_steps"]))
    assert (folder / "best").is_symlink() and str((folder / "best").readlink()) == f"step_{want['env_steps']:09d}"
    assert json.loads((folder / "best.json").read_text())["env_steps"] == want["env_steps"]
    kept = sorted(p.name for p in folder.glob("step_*"))
    assert kept == sorted({f"step_{want['env_steps']:09d}", "step_000000100"})  # keep=1 spared the best
    assert policy_path(folder / "best") == str(folder / "best")
    assert load_checkpoint(folder / "best").info["env_steps"] == want["env_steps"]
    assert load_checkpoint(tmp_path / "run").path.name == "step_000000100"  # a run folder still means the newest

    # the selection itself, on a history where the last evaluation is not the best
    run_dir = tmp_path / "selection"
    for s in (10, 20, 30, 40):
        (run_dir / "checkpoints" / f"step_{s:09d}" / "pretrained_model").mkdir(parents=True)
    run = Run(run_dir, env=None, learner=None, shaper=None, schedule=None)
    cb = Checkpoints({})
    cb.on_start(run)

    def evaluate(step, success, ret):
        run.history.append({"env_steps": step, "episodes": 10, "success_rate": success, "success_ci": [0.0, 1.0],
                            "return_mean": ret, "return_ci": [ret - 1, ret + 1]})
        cb.on_eval(step, run.history[-1])
        return str((run_dir / "checkpoints" / "best").readlink())

    run.history.append({"env_steps": 0, "episodes": 10, "success_rate": 1.0, "success_ci": [0.7, 1.0],
                        "return_mean": 99.0, "return_ci": [98.0, 100.0]})  # step 0: no checkpoint, never "best"
    assert evaluate(10, 0.5, 5.0) == "step_000000010"
    assert evaluate(20, 0.9, 3.0) == "step_000000020"
    assert evaluate(30, 0.2, 9.0) == "step_000000020"   # a collapse after the best keeps the best
    assert evaluate(40, 0.9, 4.0) == "step_000000040"   # same success, higher return
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary link left behind

    # a real folder named best is refused before the first step, not at the first evaluation
    other = tmp_path / "other"
    (other / "checkpoints" / "best").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="best' exists and is not a link"):
        Checkpoints({}).on_start(Run(other, env=None, learner=None, shaper=None, schedule=None))

    # the report names the best checkpoint when the last evaluation is worse
    report({**out, "run_dir": str(run_dir), "checkpoints": [], "first_eval": None,
            "last_eval": {**run.history[3], "env_steps": 30}})
    text = capsys.readouterr().out
    assert "best evaluation (env step 40): success 0.90" in text
    assert f"dopa deploy checkpoint={run_dir / 'checkpoints' / 'best'}" in text
