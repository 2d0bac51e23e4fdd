"""EXPO learner: shapes and invariants of each part, a learning test, the real Lift env, export."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from control.expo import (
    EXPO,
    CriticEnsemble,
    Denoiser,
    DiffusionBasePolicy,
    EditPolicy,
    EXPOConfig,
    episodes_to_transitions,
    on_the_fly,
)
from control.learner import Transition
from sim.episodes import Episode, EpisodeWriter, read_episodes

# Small networks so the suite runs on two busy cores; the algorithm is the same at any size.
TINY = dict(base_hidden_dim=32, base_num_blocks=1, time_dim=16, edit_hidden_dims=(32, 32),
            critic_hidden_dims=(32, 32), num_qs=4, num_min_qs=2, num_samples=4, num_edit_samples=4,
            batch_size=32, utd_ratio=2, start_training=8, diffusion_steps=5)


def build(config_cls, obs_dim, action_dim, num_envs=1, seed=0, device="cpu", offline_data=None, **hyper):
    """A learner through its typed config (``config_cls(**hyper).make(...)``), as the training job builds it."""
    return config_cls(**hyper).make(obs_dim=obs_dim, action_dim=action_dim, num_envs=num_envs, seed=seed,
                                    device=device, offline_data=offline_data)


def tiny(obs_dim=3, action_dim=2, **kw) -> EXPO:
    return build(EXPOConfig, obs_dim, action_dim, **{**TINY, **kw})


def transition(obs, action, reward, next_obs, terminated=None, truncated=None) -> Transition:
    b = obs.shape[0]
    z = torch.zeros(b, dtype=torch.bool)
    return Transition(obs, action, torch.as_tensor(reward, dtype=torch.float32), next_obs,
                      z if terminated is None else terminated, z if truncated is None else truncated)


# ----------------------------------------------------------------------------------------------
# parts
# ----------------------------------------------------------------------------------------------

def test_shapes_and_action_range():
    learner = tiny(num_envs=3, edit_scale=0.5)
    obs = torch.randn(3, 3)
    a = learner.act(obs)
    assert a.shape == (3, 2) and a.dtype == torch.float32
    assert a.abs().max() <= 1.0
    best, cands, q = learner.otf(obs)
    assert best.shape == (3, 2) and cands.shape == (3, 8, 2) and q.shape == (3, 8)
    assert learner.critic_ensemble(obs, a).shape == (4, 3)
    assert learner.policy()(obs).shape == (3, 1, 2)


def test_edits_stay_within_beta():
    torch.manual_seed(0)
    base = DiffusionBasePolicy(3, 2, 5, hidden_dim=16, num_blocks=1, time_dim=8)
    edit = EditPolicy(3, 2, (16,))
    with torch.no_grad():  # push the edit policy's mean far out so tanh saturates
        edit.mean.bias.fill_(5.0)
    critic = CriticEnsemble(3, 2, 2, (16,))
    for beta in (0.05, 0.3):
        _, cands, _ = on_the_fly(torch.randn(16, 3), base, base.denoiser, edit, critic, None, 4, 4, beta, None)
        delta = cands[:, 4:] - cands[:, :4]
        assert delta.abs().max() <= beta + 1e-6
        assert delta.abs().max() > 0.5 * beta  # edits really happen
        assert cands.abs().max() <= 1.0


def test_argmax_picks_highest_q_candidate():
    torch.manual_seed(1)
    base = DiffusionBasePolicy(3, 2, 5, hidden_dim=16, num_blocks=1, time_dim=8)
    edit = EditPolicy(3, 2, (16,))
    critic = CriticEnsemble(3, 2, 5, (16,))
    members = torch.tensor([1, 3])
    obs = torch.randn(6, 3)
    best, cands, q = on_the_fly(obs, base, base.denoiser, edit, critic, members, 4, 2, 0.3, None)
    assert cands.shape == (6, 6, 2)
    # recompute Q independently, one candidate at a time, min over the same members
    for i in range(6):
        scores = torch.stack([critic(obs[i:i + 1], cands[i, k:k + 1], members).min(0).values[0]
                              for k in range(6)])
        assert torch.allclose(scores, q[i], atol=1e-5)
        assert torch.equal(best[i], cands[i, int(scores.argmax())])


def test_edit_log_prob_matches_torch_tanh_gaussian():
    torch.manual_seed(2)
    edit = EditPolicy(3, 2, (16,))
    obs, act = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    a_hat, log_prob = edit(obs, act, gen)
    h = edit.body(torch.cat([obs, act], -1))
    mean, std = edit.mean(h), edit.log_std(h).clamp(-20, 2).exp()
    dist = torch.distributions.TransformedDistribution(torch.distributions.Normal(mean, std),
                                                       [torch.distributions.TanhTransform()])
    assert torch.allclose(log_prob, dist.log_prob(a_hat).sum(-1), atol=1e-3)


def test_base_loss_falls_on_fixed_batch():
    torch.manual_seed(3)
    base = DiffusionBasePolicy(3, 2, 10, hidden_dim=32, num_blocks=1, time_dim=16)
    obs = torch.randn(64, 3)
    act = torch.tanh(obs[:, :2] * 2.0)
    opt = torch.optim.Adam(base.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        loss = base.loss(obs, act, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    # and the samples imitate the data: closer to the targets than uniform noise would be
    err = (base.sample(obs, torch.Generator().manual_seed(1)) - act).abs().mean()
    assert err < 0.3



def _sliced_w1(x: torch.Tensor, y: torch.Tensor, n_dirs: int = 16) -> float:
    """Sliced 1-Wasserstein distance between two equal-size samples [N, A] (sorted projections)."""
    d = torch.randn(n_dirs, x.shape[1], generator=torch.Generator().manual_seed(0))
    d = d / d.norm(dim=1, keepdim=True)
    return float((torch.sort(x @ d.T, 0).values - torch.sort(y @ d.T, 0).values).abs().mean())


def test_denoiser_in_column_blocks_is_the_concatenated_input_layer():
    """The sampler's split input layer (observation share once, time shares in one pass, the noisy
    action's per step) computes the network written as one Linear over [s, a_t, time embedding]."""
    torch.manual_seed(0)
    net = Denoiser(5, 3, hidden_dim=32, num_blocks=2, time_dim=8)
    obs, act, t = torch.randn(7, 5), torch.randn(7, 3), torch.randint(0, 10, (7,))
    emb = net.time_mlp(net.time_features(t.float().reshape(-1, 1)))
    reference = net.out(torch.nn.functional.silu(net.blocks(net.inp(torch.cat([obs, act, emb], -1)))))
    torch.testing.assert_close(net(obs, act, t), reference, rtol=1e-5, atol=1e-6)
    shared = net(obs, act, torch.tensor(4))  # one step for all rows
    emb4 = net.time_mlp(net.time_features(torch.full((7, 1), 4.0)))
    torch.testing.assert_close(shared, net.out(torch.nn.functional.silu(net.blocks(net.inp(torch.cat([obs, act, emb4], -1))))),
                               rtol=1e-5, atol=1e-6)
    steps = torch.tensor([9, 4, 0])
    temb = net.time_embedding(steps)
    assert temb.shape == (3, 32)
    torch.testing.assert_close(net.trunk(net.condition(obs), act, temb[1]), shared, rtol=1e-5, atol=1e-6)


def test_ddim_sampler_draws_from_the_reference_distribution():
    """The fast sampler (diffusers' DDIM, eta 1) against the reference DDPM ancestral sampler: with
    all T steps the same distribution (distance at the level of two DDPM seeds, any weights); with
    T/2 steps on a briefly trained model, close and with both modes kept."""
    torch.manual_seed(0)
    pol = DiffusionBasePolicy(2, 2, 10, hidden_dim=32, num_blocks=1, time_dim=8)
    s = torch.full((3000, 2), 0.2)

    def draw(sampler, steps, seed):
        pol.set_sampler(sampler, steps)
        return pol.sample(s, torch.Generator().manual_seed(seed))

    def distances():
        ref = draw("ddpm", None, 1)
        return ref, _sliced_w1(ref, draw("ddpm", None, 2))

    ref, noise = distances()
    full = draw("ddim", 10, 3)
    assert _sliced_w1(ref, full) < 2 * noise + 0.01, (_sliced_w1(ref, full), noise)

    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    for _ in range(300):  # two modes, a = +-(0.5, -0.5) + 0.3 s + noise
        obs = torch.rand(256, 2, generator=g) * 2 - 1
        mode = (torch.rand(256, 1, generator=g) < 0.5).float() * 2 - 1
        act = (0.5 * mode * torch.tensor([1.0, -1.0]) + 0.3 * obs + 0.08 * torch.randn(256, 2, generator=g)).clamp(-1, 1)
        loss = pol.loss(obs, act, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ref, noise = distances()
    for steps, tol in ((10, 2 * noise + 0.01), (5, 0.1)):
        fast = draw("ddim", steps, 3)
        assert _sliced_w1(ref, fast) < tol, (steps, _sliced_w1(ref, fast), noise)
        share = lambda x: float((x[:, 0] > 0.06).float().mean())  # noqa: E731  (upper mode's share)
        assert abs(share(fast) - share(ref)) < 0.1 and 0.2 < share(fast) < 0.8
    learner = tiny(sampler="ddim", sample_steps=3)
    assert learner.base.sample_steps == 3 and learner.policy().base.sample_steps == 3
    assert learner.act(torch.zeros(2, 3)).shape == (2, 2)

def test_sampling_deterministic_under_seed():
    obs = torch.randn(4, 3)
    a1, a2, a3 = tiny(seed=7).act(obs), tiny(seed=7).act(obs), tiny(seed=8).act(obs)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, a3)
    pol = tiny(seed=7).policy()
    assert torch.equal(pol(obs), tiny(seed=7).policy()(obs))
    exported = tiny(seed=7)
    exported.export_policy()  # exporting (at checkpoints) leaves the learner's random streams alone
    assert torch.equal(exported.act(obs), a1)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="num_edit_samples"):
        tiny(num_samples=2, num_edit_samples=4)
    with pytest.raises(ValueError, match="num_min_qs"):
        tiny(num_min_qs=9)
    with pytest.raises(ValueError, match="edit_scale"):
        tiny(edit_scale=0.0)
    with pytest.raises(ValueError, match="beta_schedule"):
        tiny(beta_schedule="vp")
    learner = tiny()
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\), expected \[B, 3\]"):
        learner.act(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"obs contains NaN or inf \(row 0\)"):
        learner.act(torch.full((1, 3), float("nan")))
    with pytest.raises(ValueError, match="pretrain_steps=5 > 0 needs offline data"):
        tiny(pretrain_steps=5).act(torch.zeros(1, 3))


# ----------------------------------------------------------------------------------------------
# transitions, chunks, offline data
# ----------------------------------------------------------------------------------------------

def test_episode_chunks_rewards_and_discounts():
    ep = SimpleNamespace(states=np.arange(5, dtype=np.float32)[:, None].repeat(2, 1),
                         actions=np.linspace(-1, 1, 4, dtype=np.float32)[:, None],
                         rewards=np.array([1, 0, 0, 1], np.float32), dones=np.array([0, 0, 0, 1], bool),
                         success=True)
    tr = episodes_to_transitions([ep], horizon=3, gamma=0.5, done_is_terminal=True)
    assert tr["action"].shape == (4, 3)
    assert torch.allclose(tr["reward"], torch.tensor([1.0, 0.25, 0.5, 1.0]))
    assert torch.allclose(tr["discount"], torch.tensor([0.125, 0.0, 0.0, 0.0]))  # last chunks end at the terminal
    assert torch.equal(tr["next_obs"][:, 0], torch.tensor([3.0, 4.0, 4.0, 4.0]))
    assert torch.equal(tr["action"][3], torch.tensor([1.0, 1.0, 1.0]))  # padded with the last action
    tr = episodes_to_transitions([ep], horizon=1, gamma=0.5, done_is_terminal=False)
    assert torch.allclose(tr["discount"], torch.full((4,), 0.5))  # time limit: bootstrap
    bad = SimpleNamespace(**{**vars(ep), "states": ep.states[:4]})
    with pytest.raises(ValueError, match=r"need states \[T\+1, D\]"):
        episodes_to_transitions([bad])


def test_chunked_acting_stores_chunk_transitions():
    learner = tiny(obs_dim=3, action_dim=2, num_envs=2, horizon=3, gamma=0.5)
    obs = torch.randn(2, 3)
    a0 = learner.act(obs)
    plan = learner._plan.clone()
    assert torch.equal(a0, plan[:, 0])
    learner.observe(transition(obs, a0, [1.0, 1.0], obs + 1))
    a1 = learner.act(obs + 1)
    assert torch.equal(a1, plan[:, 1])  # open loop inside the chunk
    # env 1's episode ends after two steps: its partial chunk is stored
    learner.observe(transition(obs + 1, a1, [2.0, 2.0], obs + 2, terminated=torch.tensor([False, True])))
    assert len(learner.online) == 1
    d = {f: getattr(learner.online, f) for f in learner.online.FIELDS}
    assert torch.allclose(d["reward"][0], torch.tensor(1.0 + 0.5 * 2.0))
    assert d["discount"][0] == 0.0 and torch.equal(d["obs"][0], obs[1])
    assert torch.equal(d["action"][0].view(3, 2)[:2], torch.stack([a0[1], a1[1]]))
    a2 = learner.act(obs + 2)
    assert not torch.equal(a2[1], plan[1, 2])  # env 1 replanned; env 0 continues its chunk
    assert torch.equal(a2[0], plan[0, 2])
    learner.observe(transition(obs + 2, a2, [4.0, 0.0], obs + 3))
    assert len(learner.online) == 2
    assert torch.allclose(d["reward"][1], torch.tensor(1 + 0.5 * 2 + 0.25 * 4))
    assert torch.allclose(d["discount"][1], torch.tensor(0.125))
    assert torch.equal(d["next_obs"][1], obs[0] + 3)


def _write_demo_file(path, episodes):
    """An episode file in the project's format (sim.episodes), states only (no views)."""
    with EpisodeWriter(path, "lift", {"controller": "osc_pose"}, views=(), image_size=0) as w:
        for ep in episodes:
            t = ep.actions.shape[0]
            w.add(Episode(frames={}, states=ep.states, actions=ep.actions, rewards=ep.rewards,
                          dones=np.asarray(ep.dones, np.uint8), progress=np.zeros(t + 1, np.float32),
                          keyframes=np.zeros(0, np.int64), keyframe_names=[], success=bool(ep.success),
                          imperfection="none", seed=0))


def _bandit_episodes(n, rng, noise=0.3):
    """One-step episodes of the contextual bandit below, actions from a noisy demonstrator."""
    eps = []
    for _ in range(n):
        s = rng.uniform(-1, 1, (1, 3)).astype(np.float32)
        a = np.clip(_best_action(s) + noise * rng.standard_normal((1, 2)), -1, 1).astype(np.float32)
        eps.append(SimpleNamespace(states=np.concatenate([s, s]), actions=a, rewards=_bandit_reward(s, a),
                                   dones=np.array([True]), success=False))
    return eps


def _best_action(s):
    return 0.8 * np.tanh(np.stack([s[:, 0] + s[:, 1], s[:, 2] - s[:, 0]], -1))


def _bandit_reward(s, a):
    return (-np.square(a - _best_action(s)).sum(-1)).astype(np.float32)


def test_offline_file_pretraining(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "demos.hdf5"
    _write_demo_file(path, _bandit_episodes(200, rng, noise=0.05))
    eps = read_episodes(str(path), views=())
    assert len(eps) == 200 and eps[0].states.shape == (2, 3)
    learner = tiny(offline_data=[str(path)], pretrain_steps=150, offline_done_is_terminal=True,
                   base_lr=3e-3, batch_size=64)
    assert len(learner.offline) == 200 and learner.offline.discount.max() == 0.0
    s = rng.uniform(-1, 1, (256, 3)).astype(np.float32)
    before = learner.base.sample(torch.from_numpy(s), torch.Generator().manual_seed(0))
    metrics = learner.pretrain()
    assert "pretrain/base_loss" in metrics and learner.pretrained
    after = learner.base.sample(torch.from_numpy(s), torch.Generator().manual_seed(0))
    r_before, r_after = _bandit_reward(s, before.numpy()).mean(), _bandit_reward(s, after.numpy()).mean()
    assert r_after > r_before + 0.3, (r_before, r_after)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        tiny(offline_data=[str(tmp_path / "missing.hdf5")])



def test_obs_statistics_frozen_after_the_offline_start():
    """obs_stats=frozen (default): the normaliser holds the offline states' statistics and online
    states never change them; running: they do; no offline data: the warm-up states', then fixed."""
    from control.networks import RunningMeanStd

    eps = _bandit_episodes(50, np.random.default_rng(0))
    far = torch.full((1, 3), 50.0)

    def feed(learner, n, obs):
        for _ in range(n):
            learner.observe(transition(obs, learner.act(obs), torch.zeros(1), obs))
            learner.update()

    learner = tiny(obs_normalization=True, start_training=0)
    learner.set_offline_episodes(eps)
    ref = RunningMeanStd(3)
    ref.update(torch.cat([learner.offline.obs, learner.offline.next_obs]))
    before = {k: v.clone() for k, v in learner.normalizer.state_dict().items()}
    torch.testing.assert_close(before["mean"], ref.mean)
    torch.testing.assert_close(before["var"], ref.var)
    feed(learner, 4, far)
    assert learner.grad_steps > 0
    assert all(torch.equal(v, before[k]) for k, v in learner.normalizer.state_dict().items())

    running = tiny(obs_normalization=True, start_training=0, obs_stats="running")
    running.set_offline_episodes(eps)
    feed(running, 4, far)
    assert float(running.normalizer.mean.min()) > float(before["mean"].max()) + 1.0

    warm = tiny(obs_normalization=True, start_training=3)
    feed(warm, 3, torch.ones(1, 3))
    fixed = {k: v.clone() for k, v in warm.normalizer.state_dict().items()}
    assert float(fixed["count"]) == pytest.approx(3, abs=1e-3)
    feed(warm, 3, far)
    assert all(torch.equal(v, fixed[k]) for k, v in warm.normalizer.state_dict().items())
    with pytest.raises(ValueError, match="unknown obs_stats 'drift'; known: frozen, running"):
        tiny(obs_stats="drift")

def test_learning_on_contextual_bandit():
    """Offline demonstrations are noisy; online EXPO learns Q and its argmax beats the base policy."""
    rng = np.random.default_rng(1)
    learner = tiny(num_envs=8, seed=0, gamma=0.0, utd_ratio=1, batch_size=128, start_training=64,
                   num_samples=8, num_edit_samples=8, edit_scale=0.2, base_lr=1e-3, lr=1e-3,
                   critic_hidden_dims=(64, 64), base_hidden_dim=64)
    learner.offline_done_is_terminal = True
    assert learner.set_offline_episodes(_bandit_episodes(400, rng, noise=0.5)) == 400
    for _ in range(40):
        s = torch.from_numpy(rng.uniform(-1, 1, (8, 3)).astype(np.float32))
        a = learner.act(s)
        r = torch.from_numpy(_bandit_reward(s.numpy(), a.numpy()))
        learner.observe(transition(s, a, r, s, terminated=torch.ones(8, dtype=torch.bool)))
        metrics = learner.update()
    assert learner.grad_steps > 200 and math.isfinite(metrics["critic_loss"])
    s = torch.from_numpy(rng.uniform(-1, 1, (256, 3)).astype(np.float32))
    gen = torch.Generator().manual_seed(0)
    base_r = _bandit_reward(s.numpy(), learner.base.sample(s, gen, learner.ema_denoiser.module).numpy()).mean()
    otf_r = _bandit_reward(s.numpy(), learner.act(s).numpy()).mean()
    demo_r = np.mean([e.rewards[0] for e in _bandit_episodes(256, rng, noise=0.5)])
    assert otf_r > base_r + 0.05, (otf_r, base_r)
    assert otf_r > demo_r + 0.1, (otf_r, demo_r)


# ----------------------------------------------------------------------------------------------
# checkpoints, config, export, the real environment
# ----------------------------------------------------------------------------------------------

def _fill(learner, n=12, obs_dim=3, action_dim=2):
    for _ in range(n):
        s = torch.randn(learner.num_envs, obs_dim)
        learner.observe(transition(s, learner.act(s), torch.randn(learner.num_envs), s + 0.1))
        learner.update()


def test_state_dict_roundtrip_resumes_exactly():
    a = tiny(seed=3)
    _fill(a)
    b = tiny(seed=99)
    b.load_state_dict(a.state_dict())
    obs = torch.randn(5, 3)
    assert torch.equal(a.act(obs), b.act(obs))
    ma, mb = a.update_round(), b.update_round()
    assert ma == mb


def test_hydra_config_instantiates():
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="learner/expo")
    lc = cfg.learner
    assert lc.num_qs == 10 and lc.num_min_qs == 2 and lc.utd_ratio == 20 and lc.num_samples == 8
    assert lc.edit_scale == 0.05 and lc.diffusion_steps == 10 and lc.offline_ratio == 0.5
    config = instantiate(lc, base_hidden_dim=16, critic_hidden_dims=[16], edit_hidden_dims=[16])
    assert isinstance(config, EXPOConfig) and config.name == "expo" and config.gamma == 0.99
    learner = config.make(obs_dim=3, action_dim=2, num_envs=1, seed=0, device="cpu")
    assert isinstance(learner, EXPO) and learner.act(torch.zeros(1, 3)).shape == (1, 2)


def test_export_roundtrip(tmp_path):
    from control.export import load_policy, save_policy

    learner = tiny(obs_dim=3, action_dim=2, horizon=2, obs_normalization=True)
    _fill(learner, n=6)
    pol, extra = learner.export_policy()
    assert extra["kind"] == "expo" and extra["action_horizon"] == 2
    norm = extra["obs_normalizer"]
    assert len(norm["mean"]) == 3 and min(norm["std"]) > 0
    meta = dict(task="lift", controller="osc_pose", state_dim=3, action_dim=2, state_layout=[["x", 3]],
                image_size=0, **extra)
    save_policy(tmp_path / "deploy", pol, meta)
    loaded = load_policy(tmp_path / "deploy")
    state = np.array([0.1, -0.2, 0.3], np.float32)
    chunk = loaded.act(state)
    assert chunk.shape == (2, 2)
    normed = learner._norm(torch.from_numpy(state)[None])
    expected = learner.policy()(normed)[0]  # a fresh policy: same generator seed
    np.testing.assert_allclose(np.asarray(chunk), expected.numpy(), atol=1e-5)


def test_exported_policy_drawn_with_another_sampler(tmp_path):
    """load_policy(sampling=) draws the same trained model with DDIM over fewer steps (weights
    untouched); keys other than the kind's sampling settings, bad values and kinds that draw no
    samples are refused by name."""
    from control.export import MLPPolicy, load_policy, save_policy

    learner = tiny(obs_dim=3, action_dim=2)
    _fill(learner, n=6)
    pol, extra = learner.export_policy()
    meta = dict(task="lift", controller="osc_pose", state_dim=3, action_dim=2, state_layout=[["x", 3]],
                image_size=0, **extra)
    save_policy(tmp_path / "expo", pol, meta)
    ref = load_policy(tmp_path / "expo")
    fast = load_policy(tmp_path / "expo", {"sampler": "ddim", "sample_steps": 3})
    assert ref.module.base.sampler == "ddpm" and fast.module.base.sampler == "ddim"
    assert fast.module.base.sample_steps == 3 and len(fast.module.base.sample_scheduler.timesteps) == 3
    assert fast.module.export_config()["sample_steps"] == 3
    for k, v in ref.module.state_dict().items():
        assert torch.equal(v, fast.module.state_dict()[k])
    state = np.array([0.1, -0.2, 0.3], np.float32)
    chunk = fast.act(state)
    assert chunk.shape == (1, 2) and np.isfinite(chunk).all() and np.abs(chunk).max() <= 1.0
    with pytest.raises(ValueError, match=r"unknown sampling setting\(s\) \['seed'\] for policy kind 'expo'; "
                                         r"allowed: sampler, sample_steps"):
        load_policy(tmp_path / "expo", {"seed": 3})
    with pytest.raises(ValueError, match="unknown sampler 'dpm'; known: ddpm, ddim"):
        load_policy(tmp_path / "expo", {"sampler": "dpm"})
    with pytest.raises(ValueError, match=r"sample_steps must be in \[1, diffusion_steps=\d+\], got 99"):
        load_policy(tmp_path / "expo", {"sampler": "ddim", "sample_steps": 99})
    with pytest.raises(ValueError, match="sample_steps=2 needs sampler=ddim: sampler ddpm"):
        load_policy(tmp_path / "expo", {"sample_steps": 2})  # the exported sampler is ddpm
    save_policy(tmp_path / "mlp", MLPPolicy(3, 2, hidden=[8]), {**meta, "kind": "mlp"})
    with pytest.raises(ValueError, match="policy kind 'mlp' draws no samples"):
        load_policy(tmp_path / "mlp", {"sampler": "ddim"})


def test_real_lift_env_steps_and_updates():
    import sim

    env = sim.make_env("lift", num_envs=2, seed=0, max_episode_steps=6)
    obs, _ = env.reset(seed=0)
    learner = build(EXPOConfig, obs["state"].shape[1], env.action_dim, num_envs=2, **{**TINY, "start_training": 4, "horizon": 2})
    metrics = {}
    for _ in range(8):
        action = learner.act(obs["state"])
        next_obs, reward, terminated, truncated, info = env.step(action)
        final = info["final_obs"]["state"] if "final_obs" in info else next_obs["state"]
        learner.observe(Transition(obs["state"], action, reward, final, terminated, truncated))
        metrics = learner.update()
        obs = next_obs
    env.close()
    assert learner.env_steps == 16 and len(learner.online) > 0
    assert metrics and all(math.isfinite(v) for v in metrics.values())


def test_offline_start_from_dopa_demos_file(tmp_path):
    """The real path: `dopa demos` writes Lift episodes; EXPO reads them through sim.episodes."""
    from jobs.cli import main

    path = tmp_path / "lift.hdf5"
    assert main(["demos", "task=lift", "n=1", "views=[]", f"out={path}"]) == 0
    learner = build(EXPOConfig, 60, 7, offline_data=[str(path)], pretrain_steps=3, obs_normalization=True,
                   **{**TINY, "batch_size": 16})
    n = len(learner.offline)
    assert n > 20 and learner.offline.reward[:n].max() == 1.0  # the demo reaches success
    assert learner.act(torch.zeros(1, 60)).shape == (1, 7) and learner.pretrained
    assert learner.normalizer.count > n  # statistics seeded by the demonstrations
