"""SAC and PPO: their parts checked against reference formulas, and each beating a random policy on
cartpole-swingup (200-step episodes) with a fixed seed, trained through the real training loop."""

import math

import pytest
import torch

from control.buffers import ReplayBuffer, RolloutBuffer
from control.networks import CriticEnsemble, RunningMeanStd, TanhGaussianActor


def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution():
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 3, hidden=[16], layer_norm=True)
    obs = torch.randn(5, 4)
    g = torch.Generator().manual_seed(1)
    a, logp = actor.sample(obs, generator=g)
    mean, log_std = actor(obs)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform(cache_size=1)])
    ref = dist.log_prob(a).sum(-1)
    torch.testing.assert_close(logp, ref, atol=2e-3, rtol=1e-3)
    assert a.abs().max() < 1


def test_critic_ensemble_shapes_and_subset_min():
    c = CriticEnsemble(4, 2, num_critics=5, hidden=[8])
    q = c(torch.randn(7, 4), torch.randn(7, 2))
    assert q.shape == (5, 7)
    full = c.min_over_subset(q, 5)
    torch.testing.assert_close(full, q.min(0).values)
    sub = c.min_over_subset(q, 2, torch.Generator().manual_seed(0))
    assert (sub >= full - 1e-6).all()
    with pytest.raises(ValueError, match="critic subset size must be in \\[1, 5\\], got 6"):
        c.min_over_subset(q, 6)


def test_replay_buffer_wraps_and_round_trips():
    buf = ReplayBuffer(5, 2, 1)
    for i in range(3):
        buf.add(torch.full((2, 2), float(i)), torch.zeros(2, 1), torch.full((2,), float(i)), torch.zeros(2, 2),
                torch.tensor([False, True]))
    assert len(buf) == 5 and buf.ptr == 1
    assert sorted(buf.reward.tolist()) == [0.0, 1.0, 1.0, 2.0, 2.0]  # the oldest row was overwritten
    other = ReplayBuffer(5, 2, 1)
    other.load_state_dict(buf.state_dict())
    torch.testing.assert_close(other.obs, buf.obs)
    assert other.ptr == buf.ptr
    with pytest.raises(ValueError, match="obs has shape \\(2, 3\\), expected \\(2, 2\\)"):
        buf.add(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 2), torch.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="reward contains NaN"):
        buf.add(torch.zeros(1, 2), torch.zeros(1, 1), torch.tensor([math.nan]), torch.zeros(1, 2),
                torch.zeros(1, dtype=bool))


def test_gae_matches_a_hand_computation():
    buf = RolloutBuffer(3, 1, 1, 1)
    rewards, values, dones = [1.0, 0.5, 2.0], [0.2, 0.4, 0.1], [False, True, False]
    for r, v, d in zip(rewards, values, dones, strict=True):
        buf.add(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.tensor([v]), torch.tensor([r]),
                torch.tensor([d]), torch.zeros(1, 1))
    gamma, lam, last = 0.9, 0.8, torch.tensor([0.3])
    adv, ret = buf.compute_gae(last, gamma, lam)
    d2 = 2.0 + gamma * 0.3 - 0.1
    d1 = 0.5 + 0.0 - 0.4  # episode ended after step 1: no bootstrap, no trace
    d0 = 1.0 + gamma * 0.4 - 0.2
    expected = [d0 + gamma * lam * d1, d1, d2]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected))
    torch.testing.assert_close(ret, adv + buf.value)


def test_running_mean_std_matches_batch_statistics():
    x = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 2.0
    rms = RunningMeanStd(3)
    for chunk in x.split(137):
        rms.update(chunk)
    torch.testing.assert_close(rms.mean, x.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(rms.var, x.var(0, unbiased=False), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="NaN"):
        rms.update(torch.tensor([[math.nan, 0.0, 0.0]]))


# ------------------------------------------------------------------------------------------------
# Learning: each beats a random policy by a clear margin (same evaluation seeds for both).

EVAL_EPISODES, EVAL_SEED, T = 4, 100, 200


def _random_and_trained(tmp_path, overrides):
    import sim
    from control.evaluate import evaluate, learner_policy
    from jobs.cli import compose
    from jobs.train import train_from_config as train

    cfg = compose("train", ["env=cartpole-swingup", f"env.kwargs.max_episode_steps={T}", "reward=dense",
                            "progress=false", "eval.every=0", f"run_dir={tmp_path}", *overrides])
    out = train(cfg)
    env = sim.make_env("cartpole-swingup", num_envs=EVAL_EPISODES, seed=EVAL_SEED, max_episode_steps=T)
    g = torch.Generator().manual_seed(0)
    rand = evaluate(env, lambda o: torch.rand(o["state"].shape[0], env.action_dim, generator=g) * 2 - 1, EVAL_SEED)
    trained = evaluate(env, learner_policy(out["learner"]), EVAL_SEED)
    env.close()
    return rand["return_mean"], trained["return_mean"]


@pytest.mark.slow
def test_sac_beats_random_on_cartpole_swingup(tmp_path):
    rand, sac = _random_and_trained(tmp_path, [
        "learner=sac", "num_envs=4", "total_steps=8000", "checkpoint_every=8000", "learner.utd_ratio=0.25",
        "learner.learning_starts=1000", "learner.hidden=[128,128]", "learner.batch_size=128"])
    print(f"cartpole-swingup {T} steps: random {rand:.2f}, SAC {sac:.2f}")
    assert sac > 3 * rand + 3.0, (rand, sac)


@pytest.mark.slow
def test_ppo_beats_random_on_cartpole_swingup(tmp_path):
    rand, ppo = _random_and_trained(tmp_path, [
        "learner=ppo", "num_envs=4", "total_steps=10240", "checkpoint_every=10240", "learner.num_steps=128",
        "learner.num_minibatches=4"])
    print(f"cartpole-swingup {T} steps: random {rand:.2f}, PPO {ppo:.2f}")
    assert ppo > 3 * rand + 3.0, (rand, ppo)
