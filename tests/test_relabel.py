"""One reward for every transition: offline episodes relabelled with the run's reward agree with
the rewards the online loop gives the same trajectory (reward_models/relabel.py, jobs.build)."""

import numpy as np
import pytest
import torch

import sim
from jobs.build import build_learner, build_shaper, relabel_offline_data
from jobs.cli import compose
from reward_models import relabel
from sim.demos import record_demos
from sim.episodes import read_episodes


@pytest.fixture(scope="module")
def lift_demo(tmp_path_factory):
    """One scripted Lift demonstration (no cameras), long enough to succeed and hold the cube."""
    path = tmp_path_factory.mktemp("relabel") / "lift.hdf5"
    record_demos("lift", 1, path, seed=3, imperfections={"none": 1.0}, max_episode_steps=70,
                 post_success_steps=5)
    return path


def _online_rewards(cfg, ep) -> np.ndarray:
    """Replay the episode's actions in a fresh env from its seed, with the run's shaper, the way the
    training loop calls it (final_obs on the time-limit step)."""
    t_len = ep.num_steps
    env = sim.make_env("lift", num_envs=1, seed=ep.seed, progress=True, max_episode_steps=t_len)
    try:
        obs, _ = env.reset(seed=ep.seed)
        np.testing.assert_allclose(obs["state"][0].numpy(), ep.states[0], atol=1e-5)
        shaper = build_shaper(cfg.reward, env, type("L", (), {"gamma": 0.9})())
        shaper.start(obs)
        out = []
        for t in range(t_len):
            nobs, r, term, trunc, info = env.step(torch.as_tensor(ep.actions[t:t + 1]))
            final = info.get("final_obs", nobs)
            reward, _ = shaper.step(r, final, term, trunc, info["success"], reset_obs=nobs)
            out.append(float(reward[0]))
        assert bool(trunc[0])
        return np.asarray(out, dtype=np.float32)
    finally:
        env.close()


@pytest.mark.parametrize("reward", ["oracle", "sparse", "dense"])
def test_offline_rewards_equal_the_online_rewards_of_the_same_trajectory(lift_demo, reward):
    """The relabelled reward of every stored transition is the reward the loop computes when the
    same actions are replayed online: the critic sees one reward function."""
    cfg = compose("train", ["env=lift", f"reward={reward}", "reward.scale=2.0", "reward.query_every=1", "learner=sac"])
    ep = read_episodes(lift_demo, views=())[0]
    assert ep.success, "the scripted demonstration should succeed"

    def make_shaper():
        one = type("E", (), {"task": "lift", "num_envs": 1})()
        shaper = build_shaper(cfg.reward, one, type("L", (), {"gamma": 0.9})())
        shaper.query_every = 1
        return shaper

    offline = relabel.relabel_episode(ep, make_shaper())
    online = _online_rewards(cfg, ep)
    np.testing.assert_allclose(offline, online, atol=1e-5)
    if reward == "oracle":  # shaped: 2 * (r_gold + 0.9 Phi(s') - Phi(s)), not the env's sparse reward
        assert not np.allclose(offline, ep.rewards)
        assert offline.sum() > 0
    if reward == "sparse":  # 2 * success on every step from the first success on
        np.testing.assert_allclose(offline, 2.0 * (ep.progress[1:] >= 1.0))


def test_learner_offline_buffer_holds_the_runs_reward_and_the_cache_is_used(lift_demo, monkeypatch):
    """jobs.build.relabel_offline_data hands the learner relabelled transitions; a second run
    reads the cached rewards beside the file instead of running the potential again; another
    reward setting gets its own cache entry."""
    cfg = compose("train", ["env=lift", "reward=oracle", "reward.scale=2.0", "learner=rlpd", "learner.utd_ratio=1",
                            f"offline_data=[{lift_demo}]"])
    env = sim.make_env("lift", num_envs=1, seed=0)
    try:
        learner = build_learner(cfg.learner, env, seed=0, offline_data=[str(lift_demo)])
        before = learner.offline.reward[:len(learner.offline)].clone()
        assert relabel_offline_data(cfg.reward, env, learner, log=lambda m: None) == 1
        after = learner.offline.reward[:len(learner.offline)].clone()
        ep = read_episodes(lift_demo, views=())[0]
        assert not torch.allclose(before, after)
        gamma = learner.gamma
        phi = ep.progress
        expected = 2.0 * ((phi[1:] >= 1.0).astype(np.float32) + gamma * phi[1:] - phi[:-1])
        np.testing.assert_allclose(after.cpu().numpy(), expected, atol=1e-5)
        cached = list((lift_demo.parent / (lift_demo.name + ".rewards")).glob("*.npz"))
        assert len(cached) == 1

        def boom(*a, **k):
            raise AssertionError("the potential ran although the rewards are cached")

        monkeypatch.setattr(relabel, "relabel_episode", boom)
        relabel_offline_data(cfg.reward, env, learner, log=lambda m: None)
        torch.testing.assert_close(learner.offline.reward[:len(learner.offline)], after)
        monkeypatch.undo()
        cfg2 = compose("train", ["env=lift", "reward=oracle", "reward.scale=1.0", "learner=rlpd",
                                 f"offline_data=[{lift_demo}]"])
        relabel_offline_data(cfg2.reward, env, learner, log=lambda m: None)
        np.testing.assert_allclose(learner.offline.reward[:len(learner.offline)].cpu().numpy(), expected / 2,
                                   atol=1e-5)
        assert len(list(cached[0].parent.glob("*.npz"))) == 2
    finally:
        env.close()


def test_relabel_refuses_a_shaper_that_skips_queries_and_missing_views(lift_demo):
    cfg = compose("train", ["env=lift", "reward=oracle", "learner=sac"])
    ep = read_episodes(lift_demo, views=())[0]
    one = type("E", (), {"task": "lift", "num_envs": 1})()
    shaper = build_shaper(cfg.reward, one, type("L", (), {"gamma": 0.9})())
    shaper.query_every = 3
    with pytest.raises(ValueError, match="query_every=3"):
        relabel.relabel_episode(ep, shaper)
    shaper.query_every, shaper.views = 1, ("front",)
    with pytest.raises(ValueError, match=r"needs view\(s\) \['front'\]; the episode has \[\]"):
        relabel.relabel_episode(ep, shaper)
