"""RLPD (``learner=rlpd``, :class:`control.sac.RLPDConfig` over the SAC learner): each of its settings
pinned by behaviour at tiny sizes, and ``learner=sac`` keeping plain SAC's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from control.learner import Transition
from control.networks import RunningMeanStd
from control.sac import SAC, RLPDConfig, SACConfig
from sim.episodes import Episode, EpisodeWriter

D, A = 3, 2
OFFLINE_REWARD = 7.0  # marks offline rows in a batch (online rewards are 0)


def _write_episodes(path, n=6, t=5, seed=0):
    """An episode file in the project's format (``sim.episodes``): n episodes of t steps, states only,
    every reward OFFLINE_REWARD, the last ``done`` set."""
    rng = np.random.default_rng(seed)
    with EpisodeWriter(path, "lift", {"controller": "osc_pose"}, views=(), image_size=0) as w:
        for _ in range(n):
            dones = np.zeros(t, np.uint8)
            dones[-1] = 1
            w.add(Episode(frames={}, states=(3.0 + rng.standard_normal((t + 1, D))).astype(np.float32),
                          actions=rng.uniform(-1, 1, (t, A)).astype(np.float32),
                          rewards=np.full(t, OFFLINE_REWARD, np.float32), dones=dones,
                          progress=np.zeros(t + 1, np.float32), keyframes=np.zeros(0, np.int64), keyframe_names=[],
                          success=True, imperfection="none", seed=0))
    return str(path)


TINY = dict(hidden=(16, 16), batch_size=8, buffer_size=64, learning_starts=0, utd_ratio=4)


def rlpd(tmp_path, **kw) -> SAC:
    return RLPDConfig(**{**TINY, **kw}).make(obs_dim=D, action_dim=A, num_envs=1, seed=0,
                                             offline_data=[_write_episodes(tmp_path / "demos.hdf5")])


def _observe(learner, n=1, obs=None):
    for _ in range(n):
        s = torch.randn(1, D) if obs is None else obs
        learner.observe(Transition(s, learner.act(s), torch.zeros(1), s, torch.zeros(1, dtype=torch.bool),
                                   torch.zeros(1, dtype=torch.bool)))


def _spy_actor(learner):
    """Record (obs, action, log_prob) of every stochastic actor sample with gradients (the actor step)."""
    calls, orig = [], learner.actor.sample

    def spy(obs, deterministic=False, generator=None):
        a, logp = orig(obs, deterministic, generator)
        if torch.is_grad_enabled():
            calls.append((obs.detach().clone(), a.detach().clone(), logp.detach().clone()))
        return a, logp

    learner.actor.sample = spy
    return calls


# ------------------------------------------------------------------------------------------------
def test_hydra_configs_rlpd_and_sac(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="configs", version_base="1.3"):
        r, s = compose(config_name="learner/rlpd").learner, compose(config_name="learner/sac").learner
    config = instantiate(r, hidden=[16])
    assert isinstance(config, RLPDConfig) and config.name == "rlpd" and config.takes_offline_data
    assert (config.num_critics, config.critic_subset, config.actor_q, config.init_temperature) == (10, 2, "mean", 1.0)
    assert config.utd_ratio == 20 and config.offline_ratio == 0.5 and config.actor_update_every is None
    learner = config.make(obs_dim=D, action_dim=A, offline_data=[_write_episodes(tmp_path / "d.hdf5")])
    assert learner.name == "rlpd" and learner.actor_update_every == 20
    assert learner.target_entropy == -A / 2 and float(learner.temperature.detach()) == pytest.approx(1.0)
    # plain SAC keeps its standard settings and takes no offline data
    sac_cfg = instantiate(s, hidden=[16])
    assert (sac_cfg.num_critics, sac_cfg.actor_q, sac_cfg.init_temperature, sac_cfg.obs_stats) == (2, "min", 0.1, "running")
    sac = sac_cfg.make(obs_dim=D, action_dim=A)
    assert sac.name == "sac" and sac.target_entropy == -A and sac.actor_update_every == 1 and sac.offline is None
    with pytest.raises(ValueError, match="offline_data was given but learner sac takes no offline_data"):
        sac_cfg.make(obs_dim=D, action_dim=A, offline_data=[str(tmp_path / "d.hdf5")])


def test_ten_layernorm_critics_and_an_actor_without(tmp_path):
    learner = rlpd(tmp_path)
    assert learner.critic.num_critics == 10 and learner.critic.layer_norm
    assert len(learner.critic.ln_weights) == len(TINY["hidden"])
    assert learner.critic(torch.zeros(5, D), torch.zeros(5, A)).shape == (10, 5)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in learner.actor.modules())


def test_actor_loss_is_minus_the_ensemble_mean(tmp_path):
    """RLPD's actor maximises the mean over the 10 critics; plain SAC the minimum."""
    for learner, reduce in ((rlpd(tmp_path), lambda q: q.mean(0)),
                            (SACConfig(**TINY).make(obs_dim=D, action_dim=A), lambda q: q.min(0).values)):
        _observe(learner, 3)
        learner.actor_update_every = 1  # an actor step on this gradient step
        calls = _spy_actor(learner)
        metrics = learner.gradient_step()
        obs, a, logp = calls[-1]
        with torch.no_grad():  # the critic has not moved since the actor step (only the actor did)
            q = learner.critic(obs, a)
        alpha = metrics["temperature"]
        expected = (alpha * logp - reduce(q)).mean()
        assert metrics["actor_loss"] == pytest.approx(float(expected), abs=1e-5)
        other = (alpha * logp - (q.min(0).values if reduce(q).equal(q.mean(0)) else q.mean(0))).mean()
        assert abs(float(other) - metrics["actor_loss"]) > 1e-3  # the two reductions differ here


def test_td_target_is_the_min_over_a_random_pair_of_the_ten(tmp_path):
    learner = rlpd(tmp_path)
    _observe(learner, 3)
    seen, orig = [], learner.critic_target.min_over_subset

    def spy(q, k, generator=None):
        out = orig(q, k, generator)
        seen.append((q.clone(), k, out.clone()))
        return out

    learner.critic_target.min_over_subset = spy
    pairs = set()
    for _ in range(6):
        learner.gradient_step()
        q, k, out = seen[-1]
        assert k == 2 and q.shape[0] == 10
        match = [p for p in itertools.combinations(range(10), 2) if torch.equal(out, q[list(p)].min(0).values)]
        assert match, "the target is the min over one pair of members for the whole batch"
        pairs.add(match[0])
    assert len(pairs) > 1  # the pair is drawn anew


def test_batches_hold_half_offline_rows_from_the_episode_file(tmp_path):
    learner = rlpd(tmp_path, batch_size=10)
    assert len(learner.offline) == 6 * 5 and int(learner.offline.terminated.sum()) == 0  # done is not terminal
    assert rlpd(tmp_path, offline_done_is_terminal=True).offline.terminated.sum() == 6
    assert (learner._sample(10)["reward"] == OFFLINE_REWARD).all()  # no online data yet: offline only
    _observe(learner, 4)
    seen, orig = [], learner._sample

    def spy(n):
        out = orig(n)
        seen.append(out)
        return out

    learner._sample = spy
    learner.gradient_step()
    rewards = seen[-1]["reward"]
    assert rewards.shape == (10,) and int((rewards == OFFLINE_REWARD).sum()) == 5 and int((rewards == 0).sum()) == 5


def test_one_actor_update_per_env_step_at_the_configured_utd(tmp_path):
    learner = rlpd(tmp_path, utd_ratio=4)
    steps = []
    orig = learner.actor_opt.step
    learner.actor_opt.step = lambda *a, **k: (steps.append(1), orig(*a, **k))[1]
    for _ in range(3):
        _observe(learner)
        learner.update()
    assert learner.grad_steps == 12 and len(steps) == 3


def test_temperature_starts_at_one_and_moves_toward_minus_half_a(tmp_path):
    learner = rlpd(tmp_path, alpha_lr=0.1)
    _observe(learner, 2)
    calls = _spy_actor(learner)
    learner.actor_update_every = 1
    learner.gradient_step()
    entropy = float(-calls[-1][2].mean())
    # eq. 18: alpha falls when the policy's entropy is above the target -A/2, rises below it
    assert (float(learner.temperature.detach()) < 1.0) == (entropy > -A / 2)


def test_frozen_statistics_come_from_the_offline_states(tmp_path):
    learner = rlpd(tmp_path, obs_normalization=True)
    ref = RunningMeanStd(D)
    ref.update(torch.cat([learner.offline.obs, learner.offline.next_obs]))
    before = {k: v.clone() for k, v in learner.normalizer.state_dict().items()}
    torch.testing.assert_close(before["mean"], ref.mean)
    _observe(learner, 5, obs=torch.full((1, D), 50.0))
    learner.update()
    for k, v in learner.normalizer.state_dict().items():
        assert torch.equal(v, before[k]), k
    running = rlpd(tmp_path, obs_normalization=True, obs_stats="running")
    _observe(running, 5, obs=torch.full((1, D), 50.0))
    assert float(running.normalizer.mean.max()) > float(before["mean"].max()) + 1.0


def test_resume_repeats_the_run(tmp_path):
    a = rlpd(tmp_path)
    _observe(a, 3)
    a.update()
    b = rlpd(tmp_path)
    b.load_state_dict(a.state_dict())
    _observe(a, 1, obs=torch.ones(1, D))
    _observe(b, 1, obs=torch.ones(1, D))
    assert a.update() == b.update()


def _write_expert_episodes(path, n=20, t=10, seed=0):
    """Episodes whose action is a fixed function of the state, a = tanh(s W) (a demonstrator to clone)."""
    rng = np.random.default_rng(seed)
    W = np.asarray([[1.0, -0.5], [0.5, 1.0], [-1.0, 0.5]], np.float32)
    with EpisodeWriter(path, "lift", {"controller": "osc_pose"}, views=(), image_size=0) as w:
        for _ in range(n):
            states = rng.standard_normal((t + 1, D)).astype(np.float32)
            dones = np.zeros(t, np.uint8)
            dones[-1] = 1
            w.add(Episode(frames={}, states=states, actions=np.tanh(states[:-1] @ W), rewards=np.zeros(t, np.float32),
                          dones=dones, progress=np.zeros(t + 1, np.float32), keyframes=np.zeros(0, np.int64),
                          keyframe_names=[], success=True, imperfection="none", seed=0))
    return str(path), W


def test_behaviour_cloning_start_clones_the_demonstrator_once_and_acts_with_it(tmp_path):
    path, W = _write_expert_episodes(tmp_path / "expert.hdf5")
    kw = dict(hidden=(32, 32), batch_size=64, buffer_size=64, learning_starts=1000, utd_ratio=1, actor_lr=1e-3)
    states = torch.randn(256, D, generator=torch.Generator().manual_seed(1))
    target = torch.tanh(states @ torch.from_numpy(W))
    plain = RLPDConfig(**kw).make(obs_dim=D, action_dim=A, num_envs=1, seed=0, offline_data=[path])
    cloned = RLPDConfig(**kw, bc_steps=800).make(obs_dim=D, action_dim=A, num_envs=1, seed=0, offline_data=[path])
    assert plain.pretrain() == {} and plain.pretrained  # RLPD: nothing to clone
    before = (cloned.act(states[:1], deterministic=True) - target[:1]).abs().mean()  # runs the cloning first
    assert cloned.pretrained
    err_cloned = (cloned.act(states, deterministic=True) - target).abs().mean()
    err_plain = (plain.act(states, deterministic=True) - target).abs().mean()
    assert err_cloned < 0.1 < err_plain, (float(err_cloned), float(err_plain), float(before))
    assert cloned.pretrain() == {}  # once only
    bc = cloned.update()  # the cloning's metrics (run by act) come with the next update
    assert set(bc) == {"pretrain/bc_loss", "pretrain/bc_action_err"} and bc["pretrain/bc_action_err"] < 0.1
    assert cloned.update() == {}
    # the warm-up before learning_starts acts with the cloned policy, not uniform random actions
    noisy = cloned.act(states)
    assert (noisy - target).abs().mean() < 0.5 * (plain.act(states) - target).abs().mean()
    # the flag is checkpointed: a resumed learner does not clone again over its trained actor
    resumed = RLPDConfig(**kw, bc_steps=800).make(obs_dim=D, action_dim=A, num_envs=1, seed=5, offline_data=[path])
    resumed.load_state_dict(cloned.state_dict())
    assert resumed.pretrained and resumed.pretrain() == {}
    assert torch.equal(resumed.act(states, deterministic=True), cloned.act(states, deterministic=True))


def test_behaviour_cloning_needs_offline_data_and_a_count():
    with pytest.raises(ValueError, match="bc_steps"):
        RLPDConfig(bc_steps=-1)
    learner = RLPDConfig(**TINY, bc_steps=5).make(obs_dim=D, action_dim=A, num_envs=1, seed=0)
    with pytest.raises(ValueError, match=r"bc_steps=5 > 0 needs offline data"):
        learner.act(torch.zeros(1, D))
