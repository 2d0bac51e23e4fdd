"""Bad configuration and bad batches are refused by the learners, networks, buffers and the main
job's preparation with a ValueError that names the value and what is allowed; the SAC/PPO export
helper gives the deployment policy the actor's deterministic action."""

import math

import pytest
import torch

from basics.checks import check_float, check_int, check_states
from control.buffers import ReplayBuffer, RolloutBuffer
from control.expo import EXPOConfig
from control.gorl import GenerativeDecoder, GoRLConfig, fit_decoder
from control.learner import Transition, check_transition
from control.networks import (
    MLP,
    GaussianActor,
    RunningMeanStd,
    TanhGaussianActor,
    export_mlp_policy,
    mlp_trunk,
    soft_update,
)
from control.ppo import PPOConfig
from control.sac import RLPDConfig, SACConfig

NAN, INF = float("nan"), float("inf")
D, A, B = 3, 2, 2


def build(config_cls, obs_dim, action_dim, num_envs=1, seed=0, device="cpu", offline_data=None, **hyper):
    """A learner through its typed config (``config_cls(**hyper).make(...)``), as the training job builds it."""
    return config_cls(**hyper).make(obs_dim=obs_dim, action_dim=action_dim, num_envs=num_envs, seed=seed,
                                    device=device, offline_data=offline_data)


def _transition(b=B, d=D, a=A, reward_shape=None):
    reward = torch.zeros(reward_shape if reward_shape is not None else (b,))
    return Transition(torch.zeros(b, d), torch.zeros(b, a), reward, torch.zeros(b, d),
                      torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------
def test_check_helpers_name_the_value_and_the_allowed_range():
    assert check_int("n", 3) == 3 and check_int("n", 1e6) == 1_000_000 and check_int("k", 0, 0) == 0
    for bad in (0, 2.5, True, "3", NAN):
        with pytest.raises(ValueError, match=r"n must be an int >= 1, got "):
            check_int("n", bad)
    assert check_float("lr", 3e-4, 0.0, low_open=True) == 3e-4
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got nan"):
        check_float("lr", NAN, 0.0, low_open=True)
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \(0, 1\], got 1.5"):
        check_float("gamma", 1.5, 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\), got 1.0"):
        check_float("p", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(ValueError, match=r"x must be a finite number, got inf"):
        check_float("x", INF)
    with pytest.raises(TypeError, match=r"obs must be a torch.Tensor \[B, 3\], got list"):
        check_states("obs", [[0.0] * 3], 3)
    x = torch.zeros(4, 3)
    x[2, 1] = INF
    with pytest.raises(ValueError, match=r"obs contains NaN or inf \(row 2\)"):
        check_states("obs", x, 3)
    with pytest.raises(ValueError, match=r"transition.reward has shape \(2, 1\), expected \(2,\)"):
        check_transition(_transition(reward_shape=(2, 1)), D, A)
    assert check_transition(_transition(), D, A, B) == B


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    ({"init_temperature": 0.0}, r"init_temperature must be a finite number > 0, got 0.0"),
    ({"init_temperature": -0.1}, r"init_temperature must be a finite number > 0, got -0.1"),
    ({"actor_lr": NAN}, r"actor_lr must be a finite number > 0, got nan"),
    ({"critic_lr": INF}, r"critic_lr must be a finite number > 0, got inf"),
    ({"tau": 1.5}, r"tau must be a finite number in \(0, 1\], got 1.5"),
    ({"gamma": 0.0}, r"gamma must be a finite number in \(0, 1\], got 0.0"),
    ({"batch_size": -8}, r"batch_size must be an int >= 1, got -8"),
    ({"buffer_size": 0}, r"buffer_size must be an int >= 1, got 0"),
    ({"actor_update_every": 0}, r"actor_update_every must be an int >= 1, got 0"),
    ({"critic_subset": 3}, r"critic_subset must be in \[1, num_critics=2\], got 3"),
    ({"target_entropy": NAN}, r"target_entropy must be a finite number, got nan"),
    ({"activation": "relu6"}, r"unknown activation 'relu6'; known: relu, elu, tanh, silu, gelu"),
    ({"actor_q": "max"}, r"unknown actor_q 'max'; known: min, mean"),
    ({"obs_stats": "drift"}, r"unknown obs_stats 'drift'; known: running, frozen"),
])
def test_sac_refuses_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build(SACConfig, D, A, num_envs=B, hidden=(8,), buffer_size=kw.pop("buffer_size", 16), **kw)


@pytest.mark.parametrize("kw, msg", [
    ({"offline_ratio": 1.5}, r"offline_ratio must be a finite number in \[0, 1\], got 1.5"),
    ({"num_critics": 1}, r"critic_subset must be in \[1, num_critics=1\], got 2"),
    ({"actor_update_every": 0}, r"actor_update_every must be an int >= 1, got 0"),
])
def test_rlpd_refuses_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build(RLPDConfig, D, A, hidden=(8,), **kw)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        build(RLPDConfig, D, A, hidden=(8,), offline_data=["/nonexistent/demos.hdf5"])


def test_sac_refuses_bad_batches():
    sac = build(SACConfig, D, A, num_envs=B, hidden=(8,), buffer_size=16, learning_starts=0)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\), expected \[B, 3\]"):
        sac.act(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"obs contains NaN or inf \(row 1\)"):
        sac.act(torch.tensor([[0.0, 0.0, 0.0], [0.0, NAN, 0.0]]))
    with pytest.raises(ValueError, match=r"transition.action has shape \(2, 1\), expected \[2, 2\]"):
        sac.observe(_transition(a=1))
    with pytest.raises(ValueError, match=r"transition.next_obs has shape \(2, 3\), expected \[1, 3\]"):
        sac.observe(Transition(torch.zeros(1, D), torch.zeros(1, A), torch.zeros(1), torch.zeros(2, D),
                               torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)))
    assert len(sac.buffer) == 0 and sac.env_steps == 0  # nothing half-stored
    sac.observe(_transition())
    assert len(sac.buffer) == B


@pytest.mark.parametrize("kw, msg", [
    ({"learning_rate": INF}, r"learning_rate must be a finite number > 0, got inf"),
    ({"clip_coef": 0.0}, r"clip_coef must be a finite number > 0, got 0.0"),
    ({"max_grad_norm": -1.0}, r"max_grad_norm must be a finite number > 0, got -1.0"),
    ({"gae_lambda": 1.2}, r"gae_lambda must be a finite number in \[0, 1\], got 1.2"),
    ({"target_kl": 0.0}, r"target_kl must be a finite number > 0, got 0.0"),
    ({"update_epochs": 0}, r"update_epochs must be an int >= 1, got 0"),
    ({"num_steps": -1}, r"num_steps must be an int >= 1, got -1"),
    ({"num_minibatches": 3}, r"num_steps \* num_envs = 8 must be divisible by num_minibatches = 3"),
    ({"anneal_lr": True, "total_steps": 0}, r"total_steps must be an int >= 1, got 0"),
    ({"init_log_std": NAN}, r"init_log_std must be a finite number, got nan"),
])
def test_ppo_refuses_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build(PPOConfig, D, A, num_envs=B, **{"num_steps": 4, "num_minibatches": 2, **kw})


def test_ppo_refuses_bad_batches():
    ppo = build(PPOConfig, D, A, num_envs=B, num_steps=4, num_minibatches=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"obs has shape \(2,\), expected \[B, 3\]"):
        ppo.act(torch.zeros(2))
    with pytest.raises(ValueError, match=r"transition.obs has shape \(3, 3\), expected \[2, 3\]"):
        ppo.observe(_transition(b=3))
    with pytest.raises(ValueError, match=r"transition.reward contains NaN or inf"):
        tr = _transition()
        tr.reward[0] = NAN
        ppo.observe(tr)
    assert ppo.buffer.t == 0


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    ({"decoder": "gan"}, r"unknown decoder 'gan'; known: flow, diffusion"),
    ({"decoder_prediction": "x0"}, r"unknown decoder_prediction 'x0'; known: v_prediction, epsilon"),
    ({"lr": NAN}, r"lr must be a finite number > 0, got nan"),
    ({"decoder_lr": 0}, r"decoder_lr must be a finite number > 0, got 0"),
    ({"reward_scale": 0.0}, r"reward_scale must be a finite number > 0, got 0.0"),
    ({"clip_eps": [0.15, -0.3]}, r"clip_eps must be a finite number > 0, got -0.3"),
    ({"prior_coef": -1e-3}, r"prior_coef must be a finite number >= 0, got -0.001"),
    ({"max_grad_norm": []}, r"max_grad_norm must be a number or a non-empty per-stage list, got \[\]"),
    ({"decoder_hidden": [64, 0]}, r"decoder_hidden width must be an int >= 1, got 0"),
    ({"decoder_epochs": 0}, r"decoder_epochs must be an int >= 1, got 0"),
    ({"gamma": 1.01}, r"gamma must be a finite number in \(0, 1\], got 1.01"),
    ({"stage_steps": [100, -5]}, r"stage_steps must be a non-empty list of positive step counts"),
])
def test_gorl_refuses_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build(GoRLConfig, obs_dim=D, action_dim=A, num_envs=B, **kw)


def test_gorl_observe_refuses_bad_batches():
    g = build(GoRLConfig, obs_dim=D, action_dim=A, num_envs=B, num_steps=4, num_minibatches=2)
    obs = torch.zeros(B, D)
    a = g.act(obs)
    with pytest.raises(ValueError, match=r"transition.action has shape \(2, 3\), expected \[2, 2\]"):
        g.observe(Transition(obs, torch.zeros(B, 3), torch.zeros(B), obs, torch.zeros(B, dtype=torch.bool),
                             torch.zeros(B, dtype=torch.bool)))
    with pytest.raises(ValueError, match=r"transition.reward must hold num_envs=2 entries, got \(3,\)"):
        g.observe(Transition(obs, a, torch.zeros(3), obs, torch.zeros(B, dtype=torch.bool),
                             torch.zeros(B, dtype=torch.bool)))
    with pytest.raises(ValueError, match=r"transition.next_obs has shape \(1, 3\), expected \[2, 3\]"):
        g.observe(Transition(obs, a, torch.zeros(B), obs[:1], torch.zeros(B, dtype=torch.bool),
                             torch.zeros(B, dtype=torch.bool)))
    with pytest.raises(ValueError, match=r"transition.info\['latent'\] has shape \(2, 1\), expected \[2, 2\]"):
        g.observe(Transition(obs, a, torch.zeros(B), obs, torch.zeros(B, dtype=torch.bool),
                             torch.zeros(B, dtype=torch.bool), info={"latent": torch.zeros(B, 1)}))
    assert g.buffer.t == 0 and g.env_steps == 0  # nothing stored by the refused calls
    g.observe(Transition(obs, a, torch.zeros(B), obs, torch.zeros(B, dtype=torch.bool),
                         torch.zeros(B, dtype=torch.bool)))
    assert g.buffer.t == 1 and g.env_steps == B


def test_gorl_decoder_and_fit_refuse_bad_settings():
    with pytest.raises(ValueError, match=r"time_dim must be even \(sin/cos pairs\), got 7"):
        GenerativeDecoder(D, A, time_dim=7)
    with pytest.raises(ValueError, match=r"action_dim must be an int >= 1, got 0"):
        GenerativeDecoder(D, 0)
    dec = GenerativeDecoder(D, A, hidden=(8,), steps=2)
    obs, u = torch.randn(20, D), torch.randn(20, A)
    with pytest.raises(ValueError, match=r"val_fraction must be a finite number in \(0, 1\), got 1.0"):
        fit_decoder(dec, obs, u, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got -0.001"):
        fit_decoder(dec, obs, u, lr=-1e-3)
    with pytest.raises(ValueError, match=rf"noise must have the actions' shape \(20, {A}\), got \(19, {A}\)"):
        fit_decoder(dec, obs, u, noise=torch.randn(19, A))
    bad = torch.randn(20, A)
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="paired noise contains NaN or inf"):
        fit_decoder(dec, obs, u, noise=bad)
    with pytest.raises(ValueError, match="unknown decoder_coupling 'ot'; known: policy, independent"):
        GoRLConfig(decoder_coupling="ot")


# ------------------------------------------------------------------------------------------------
EXPO_TINY = dict(num_envs=1, base_hidden_dim=8, base_num_blocks=1, time_dim=4, num_samples=2, num_edit_samples=1,
                 edit_hidden_dims=(8,), num_qs=2, critic_hidden_dims=(8,), diffusion_steps=2, buffer_size=16)


@pytest.mark.parametrize("kw, msg", [
    ({"init_temperature": 0.0}, r"init_temperature must be a finite number > 0, got 0.0"),
    ({"lr": NAN}, r"lr must be a finite number > 0, got nan"),
    ({"base_lr": -3e-4}, r"base_lr must be a finite number > 0, got -0.0003"),
    ({"tau": 0.0}, r"tau must be a finite number in \(0, 1\], got 0.0"),
    ({"actor_tau": 2.0}, r"actor_tau must be a finite number in \(0, 1\], got 2.0"),
    ({"edit_dropout": 1.0}, r"edit_dropout must be a finite number in \[0, 1\), got 1.0"),
    ({"base_weight_decay": -1.0}, r"base_weight_decay must be a finite number >= 0, got -1.0"),
    ({"buffer_size": 0}, r"buffer_size must be an int >= 1, got 0"),
    ({"time_dim": 7}, r"time_dim must be even \(cos/sin pairs\), got 7"),
    ({"critic_hidden_dims": (8, -1)}, r"critic_hidden_dims width must be an int >= 1, got -1"),
    ({"base_decay_steps": -5}, r"base_decay_steps must be an int >= 0, got -5"),
    ({"diffusion_steps": 0}, r"diffusion_steps must be an int >= 1, got 0"),
    ({"sampler": "euler"}, r"unknown sampler 'euler'; known: ddpm, ddim"),
    ({"sample_steps": 3}, r"sample_steps must be diffusion_steps=\d+ \(or null\) with sampler ddpm, got 3"),
    ({"sampler": "ddim", "sample_steps": 99}, r"sample_steps must be in \[1, diffusion_steps=\d+\], got 99"),
    ({"obs_stats": "drift"}, r"unknown obs_stats 'drift'; known: frozen, running"),
])
def test_expo_refuses_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        build(EXPOConfig, D, A, **{**EXPO_TINY, **kw})


def test_expo_observe_refuses_bad_batches_and_stores_nothing():
    learner = build(EXPOConfig, D, A, **EXPO_TINY)
    with pytest.raises(ValueError, match=r"next_obs has shape \(2, 3\), expected \[1, 3\]"):
        learner.observe(Transition(torch.zeros(1, D), torch.zeros(1, A), torch.zeros(1), torch.zeros(2, D),
                                   torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)))
    with pytest.raises(ValueError, match=r"transition.action contains NaN or inf"):
        learner.observe(Transition(torch.zeros(1, D), torch.full((1, A), NAN), torch.zeros(1), torch.zeros(1, D),
                                   torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)))
    chunked = build(EXPOConfig, D, A, **{**EXPO_TINY, "horizon": 2, "obs_normalization": True})
    with pytest.raises(ValueError, match=r"chunked observe\(\) must follow act\(deterministic=False\)"):
        chunked.observe(_transition(b=1))
    for lr in (learner, chunked):
        assert lr.env_steps == 0 and len(lr.online) == 0
    assert float(chunked.normalizer.count) == pytest.approx(1e-4)  # statistics untouched


def test_expo_accepts_integral_floats_from_configs():
    learner = build(EXPOConfig, D, A, **{**EXPO_TINY, "start_training": 5e3, "buffer_size": 16.0})
    assert learner.start_training == 5000 and learner.online.capacity == 16


# ------------------------------------------------------------------------------------------------
def test_networks_refuse_bad_settings():
    with pytest.raises(ValueError, match=r"in_dim must be an int >= 1, got 0"):
        mlp_trunk(0, [8])
    with pytest.raises(ValueError, match=r"out_dim must be an int >= 1, got 0"):
        MLP(3, 0, hidden=(8,))
    with pytest.raises(ValueError, match=r"log_std_min must be < log_std_max, got 2.0 and -5.0"):
        TanhGaussianActor(3, 2, hidden=(8,), log_std_min=2.0, log_std_max=-5.0)
    with pytest.raises(ValueError, match=r"obs_dim must be an int >= 1, got -3"):
        GaussianActor(-3, 2)
    with pytest.raises(ValueError, match=r"dim must be an int >= 1, got 0"):
        RunningMeanStd(0)
    with pytest.raises(ValueError, match=r"clip must be a finite number > 0, got -1.0"):
        RunningMeanStd(3, clip=-1.0)
    a, b = MLP(3, 1, (4,)), MLP(3, 1, (4,))
    with pytest.raises(ValueError, match=r"tau must be a finite number in \[0, 1\], got 1.5"):
        soft_update(a, b, 1.5)


def test_buffers_refuse_bad_batches():
    with pytest.raises(ValueError, match=r"obs_dim must be an int >= 1, got 0"):
        ReplayBuffer(4, 0, 1)
    with pytest.raises(ValueError, match=r"num_envs must be an int >= 1, got 0"):
        RolloutBuffer(4, 0, 2, 1)
    rb = ReplayBuffer(4, 2, 1)
    rb.add(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        rb.sample(0)
    buf = RolloutBuffer(2, 2, 3, 1)
    ok = dict(obs=torch.zeros(2, 3), action=torch.zeros(2, 1), log_prob=torch.zeros(2), value=torch.zeros(2),
              reward=torch.zeros(2), done=torch.zeros(2, dtype=torch.bool), next_obs=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"done has shape \(3,\), expected \(2,\)"):
        buf.add(**{**ok, "done": torch.zeros(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"next_obs has shape \(2, 4\), expected \(2, 3\)"):
        buf.add(**{**ok, "next_obs": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"extra 'latent' has shape \(3, 1\), expected \(2, \.\.\.\)"):
        buf.add(**ok, latent=torch.zeros(3, 1))
    buf.add(**ok, latent=torch.zeros(2, 1))
    buf.add(**ok, latent=torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"last_value has shape \(2, 1\), expected \(2,\)"):
        buf.compute_gae(torch.zeros(2, 1), 0.99, 0.95)
    with pytest.raises(ValueError, match=r"lam must be a finite number in \[0, 1\], got 1.5"):
        buf.compute_gae(torch.zeros(2), 0.99, 1.5)


def test_export_mlp_policy_acts_like_the_deterministic_actor():
    torch.manual_seed(0)
    obs = torch.randn(5, 3) * 3
    norm = RunningMeanStd(3)
    norm.update(torch.randn(50, 3))
    for actor, squash in ((TanhGaussianActor(3, 2, hidden=(8,)), torch.tanh),
                          (GaussianActor(3, 2, hidden=(8,)), lambda x: x.clamp(-1, 1))):
        with torch.no_grad():
            actor.mean.weight.mul_(50)  # push the mean outside [-1, 1] so clip and tanh differ
            pol, meta = export_mlp_policy(actor, norm)
            want = squash(actor.mean(actor.trunk(obs)))
            got = pol(obs)
        assert got.shape == (5, 1, 2)
        torch.testing.assert_close(got[:, 0], want)
        assert meta["kind"] == "mlp" and meta["action_horizon"] == 1 and meta["views"] == []
        assert meta["obs_normalizer"]["mean"] == norm.mean.tolist()
    assert export_mlp_policy(actor, None)[1]["obs_normalizer"] is None


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, msg", [
    ("prepare.adapt.demo_index=20", r"prepare.adapt.demo_index must be an int in \[0, prepare.demos.n=20\), got 20"),
    ("prepare.demos.n=0", r"prepare.demos.n must be an int >= 1, got 0"),
    ("prepare.grm.steps=-1", r"prepare.grm.steps must be an int >= 1, got -1"),
])
def test_prepare_refuses_bad_counts_before_building(tmp_path, override, msg):
    from jobs.cli import compose
    from jobs.prepare import prepare

    cfg = compose("train", [f"prepare.data_dir={tmp_path / 'data'}", override])
    with pytest.raises(ValueError, match=msg):
        prepare(cfg)
    assert not (tmp_path / "data").exists()  # nothing was built


def test_nan_never_reaches_the_networks():
    """A NaN state is refused at act() by every learner, before any network sees it."""
    bad = torch.tensor([[0.0, math.nan, 0.0]])
    for learner in (build(SACConfig, D, A, num_envs=1, hidden=(8,), buffer_size=8, learning_starts=0),
                    build(PPOConfig, D, A, num_envs=1, num_steps=2, num_minibatches=1, hidden=(8,)),
                    build(GoRLConfig, obs_dim=D, action_dim=A, num_envs=1, num_steps=2, num_minibatches=1),
                    build(EXPOConfig, D, A, **EXPO_TINY)):
        with pytest.raises(ValueError, match=r"obs contains NaN or inf \(row 0\)"):
            learner.act(bad)
