"""QARL (control/qarl.py, control/curriculum.py) and ``dopa robustness`` on real dm_control tasks at
tiny sizes: forces through xfrc_applied within bounds for one step, alpha in both agents'
observations and in the adversary's losses, the self-paced curriculum, physics divergence under
forces at the bound, exact resume with the deployable protagonist, and the robustness grid."""

import json

import numpy as np
import pytest
import torch

from control.curriculum import FixedGamma, LinearGamma, SelfPacedGamma, gamma_kl
from control.export import load_policy
from control.learner import Transition
from control.qarl import QARLConfig
from control.sac import SACConfig
from jobs.cli import compose, main
from jobs.train import setup
from jobs.train import train_from_config as train
from sim import make_env

TINY = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "reward=dense", "progress=false", "log_every=25",
        "learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
        "learner.buffer_size=1000", "adversary=qarl", "adversary.adversary.learning_starts=20",
        "adversary.adversary.hidden=[16,16]", "adversary.adversary.batch_size=8",
        "adversary.adversary.buffer_size=1000", "adversary.phase_episodes=2", "adversary.update_episodes=2",
        "adversary.threshold=0.0", "num_envs=2", "eval.every=0"]
PERT = {"cartpole": {"bodies": ["pole_1"], "components": ["fx", "fz"], "max_force": 2.0, "threshold": 1.0}}


def _qarl(env, **kw):
    cfg = QARLConfig(perturbations=PERT, adversary={"hidden": [16, 16], "batch_size": 8, "learning_starts": 0}, **kw)
    prot = SACConfig(hidden=[16, 16], batch_size=8, learning_starts=0).make(obs_dim=env.state_dim + 1,
                                                                          action_dim=env.action_dim,
                                                                          num_envs=env.num_envs, seed=0)
    q = cfg.make(prot, task=env.task, obs_dim=env.state_dim, num_envs=env.num_envs, seed=0)
    q.bind_env(env)
    return q


def test_forces_within_bounds_for_one_step_and_alpha_in_both_agents():
    env = make_env("cartpole-swingup", num_envs=2, seed=0, max_episode_steps=10)
    q = _qarl(env, phase_episodes=2)
    pole = env.envs[0].body_id("pole_1")
    seen = []
    for sub in env.envs:  # record xfrc_applied while the physics steps
        inner = sub._step_task
        sub._step_task = (lambda a, s=sub, f=inner: (seen.append(s.data.xfrc_applied.copy()), f(a))[1])
    obs, _ = env.reset(seed=0)
    for _ in range(12):
        action = q.act(obs["state"])
        nxt, r, term, trunc, info = env.step(action)
        for sub in env.envs:  # cleared after one step
            assert not sub.data.xfrc_applied.any() and sub._pending_xfrc is None
        q.observe(Transition(obs["state"], action, r, info.get("final_obs", nxt)["state"], term, trunc))
        q.update()
        obs = nxt
    xfrc = np.stack(seen)                                   # [steps * envs, nbody, 6]
    assert np.abs(xfrc[:, pole, [0, 2]]).max() <= 2.0 + 1e-9 and np.abs(xfrc[:, pole, [0, 2]]).max() > 0.05
    others = np.delete(xfrc, pole, axis=1)
    assert not others.any() and not xfrc[:, pole, [1, 3, 4, 5]].any()   # only fx, fz on the pole
    # alpha (per env, per episode) is the last state entry of both agents' data; episodes ended at step 10
    # (2 envs -> 2 episodes = one adversary phase), so the adversary holds steps 1-10, the protagonist 11-12
    adv_states = q.adversary.buffer.sample(64, torch.Generator().manual_seed(0))["obs"]
    prot_states = q.protagonist.buffer.sample(8, torch.Generator().manual_seed(0))["obs"]
    assert adv_states.shape[1] == prot_states.shape[1] == env.state_dim + 1
    assert len(q.adversary.buffer) == 20 and len(q.protagonist.buffer) == 4
    assert (adv_states[:, -1] > 0).all() and (prot_states[:, -1] > 0).all()
    assert set(prot_states[:, -1].tolist()) <= set(q.alpha.tolist())   # the new episodes' alpha
    # evaluation: alpha = 0 for the protagonist, no force queued
    fed = []
    act = q.protagonist.act
    q.protagonist.act = lambda o, d=False: (fed.append(o.clone()), act(o, d))[1]
    q.act(obs["state"], deterministic=True)
    assert (fed[0][:, -1] == 0).all() and all(s._pending_xfrc is None for s in env.envs)
    env.close()


def test_adversary_losses_use_the_per_sample_alpha():
    env = make_env("cartpole-swingup", num_envs=2, seed=0)
    q = _qarl(env)
    adv = q.adversary
    obs = torch.randn(8, env.state_dim + 1)
    alpha = torch.linspace(0.0, 3.0, 8)
    obs[:, -1] = alpha
    with torch.no_grad():
        l_alpha, logp = adv.actor_loss(obs, alpha, torch.Generator().manual_seed(3))
        l_zero, logp0 = adv.actor_loss(obs, torch.zeros(8), torch.Generator().manual_seed(3))
    assert torch.allclose(logp, logp0)
    assert torch.allclose(l_alpha - l_zero, (alpha * logp).mean(), atol=1e-5)
    assert torch.equal(adv.batch_temperature(obs), alpha)
    # a gradient step reads alpha from the sampled states: its reported temperature is theirs
    rows = obs[:4].clone()
    rows[:, -1] = 0.7
    adv.observe(Transition(rows, torch.zeros(4, 2), torch.ones(4), rows, torch.zeros(4, dtype=torch.bool),
                           torch.zeros(4, dtype=torch.bool)))
    m = adv.gradient_step()
    assert m["temperature"] == pytest.approx(0.7) and "actor_loss" in m and not adv.autotune
    env.close()


def test_self_paced_curriculum_moves_only_when_the_performance_constraint_holds():
    rng = np.random.default_rng(0)
    c = SelfPacedGamma(50.0, 1000.0, 1.0, 1000.0, threshold=10.0, max_kl=0.5, update_episodes=30)
    for a in c.sample(30, rng):
        c.record(a, 5.0)                        # returns below the threshold: frozen
    out = c.step(0)
    assert c.k == 50.0 and out["curriculum_frozen"] == 1.0 and c.frozen == 1
    ks = [c.k]
    for _ in range(3):                          # returns well above it: toward the target, within the trust region
        for a in c.sample(30, rng):
            c.record(a, 20.0)
        c.step(0)
        ks.append(c.k)
        assert gamma_kl(ks[-1], 1000.0, ks[-2], 1000.0) <= 0.5 + 1e-3
    assert ks[0] > ks[1] > ks[2] > ks[3] >= 1.0 and c.updates == 3
    assert c.kl_to_target() < gamma_kl(50.0, 1000.0, 1.0, 1000.0)
    # the constraint binds: returns that fall with lower alpha keep k where the estimate stays >= 10
    c2 = SelfPacedGamma(50.0, 1000.0, 1.0, 1000.0, threshold=10.0, update_episodes=30)
    alphas = c2.sample(30, rng)
    for a in alphas:
        c2.record(a, 10.0 + 400.0 * (a - 0.05))   # mean ~10 at k0; lower alpha -> lower return
    c2.step(0)
    assert c2.performance(c2.k, alphas, 10.0 + 400.0 * (alphas - 0.05)) >= 10.0 - 1e-3 or c2.k == 50.0
    assert FixedGamma(50, 1000, 1, 1000).k == 1.0
    lin = LinearGamma(50, 1000, 1, 1000, total_steps=300, fraction=0.5)
    lin.step(75)
    assert lin.k == pytest.approx(25.5) and (lin.step(150), lin.k)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("task, bodies", [("cheetah-run", 3), ("hopper-stand", 1)])
def test_adversary_at_its_bound_diverges_the_physics_without_a_crash(tmp_path, task, bodies):
    # a force bound far beyond the task's (1e5 N) drives MuJoCo unstable; every step at the bound
    cfg = compose("train", [f"env={task}", "env.kwargs.max_episode_steps=100", "+env.kwargs.max_force=1e6",
                            "reward=dense", "progress=false", "learner=sac", "learner.learning_starts=100000",
                            "learner.hidden=[16,16]", "learner.buffer_size=1000", "adversary=qarl",
                            "adversary.max_force=1e5", "adversary.adversary.learning_starts=100000",
                            "adversary.adversary.hidden=[16,16]", "adversary.adversary.buffer_size=1000",
                            "num_envs=2", "total_steps=600", "checkpoint_every=600", "eval.every=0",
                            "log_every=100", f"run_dir={tmp_path}"])
    pieces = setup(cfg)
    q = pieces.learner
    assert q.perturbation.action_dim == 2 * bodies
    q.adversary.act = lambda obs, deterministic=False: torch.ones(obs.shape[0], 2 * bodies)
    logged = []

    class Log:
        def on_start(self, run): pass
        def on_step(self, run): pass
        def on_log(self, steps, scalars): logged.append(scalars)
        def on_checkpoint(self, run): return None
        def on_eval(self, steps, res): return False
        def close(self): pass

    out = pieces.train([Log()])
    assert out["env_steps"] == 600
    assert pieces.env.num_diverged > 0                       # diverged, truncated, reset; training went on
    assert logged[-1]["learner/diverged"] == pieces.env.num_diverged
    states = q.adversary.buffer.sample(64, torch.Generator().manual_seed(0))["next_obs"]
    assert torch.isfinite(states).all()


@pytest.fixture(scope="module")
def qarl_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qarl")
    common = [*TINY, "checkpoint_every=50", "learner.obs_normalization=true"]
    full = train(compose("train", [*common, f"run_dir={tmp / 'full'}", "total_steps=100"]))
    half = train(compose("train", [*common, f"run_dir={tmp / 'half'}", "total_steps=50"]))
    ckpt = tmp / "half" / "checkpoints" / "step_000000050"
    resumed = train(compose("train", [*common, f"run_dir={tmp / 'half'}", "total_steps=100", f"resume={ckpt}"]))
    return tmp, full, half, resumed


def _weights(learner):
    return {f"{n}.{k}": v.clone() for n, m in learner.networks().items() for k, v in m.state_dict().items()}


def test_resume_of_a_qarl_run_is_exact_and_deploys_the_protagonist(qarl_runs):
    tmp, full, half, resumed = qarl_runs
    a, b = _weights(full["learner"]), _weights(resumed["learner"])
    assert a.keys() == b.keys() and any(k.startswith("adversary.") for k in a) and any(k.startswith("protagonist.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    mid = _weights(half["learner"])
    assert any(not torch.equal(mid[k], a[k]) for k in a if k.startswith("protagonist."))  # phase 2: protagonist
    qa, qb = full["learner"], resumed["learner"]
    assert qa.curriculum.state_dict() == qb.curriculum.state_dict() and torch.equal(qa.alpha, qb.alpha)
    assert (qa.phase, qa.episodes) == (qb.phase, qb.episodes) and qa.episodes >= 4
    # the deployment policy: the protagonist alone on the env's own state, alpha fixed at 0
    pol = load_policy(tmp / "full" / "checkpoints" / "step_000000100" / "deploy")
    assert pol.state_dim == 5
    states = torch.randn(4, 5)
    want = qa.act(states, deterministic=True).numpy()
    got = np.stack([pol.act(s.numpy())[0] for s in states])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_robustness_job_on_a_2x2_grid_and_bad_grids(qarl_runs, tmp_path, capsys):
    tmp = qarl_runs[0]
    run = tmp / "full"
    out = tmp_path / "rob"
    rc = main(["robustness", f"checkpoint={run}", "episodes=2", "scales=[0.5,1.5]", f"adversary_checkpoint={run}",
               f"out={out}", "+env.kwargs.max_episode_steps=20"])
    assert rc == 0
    res = json.loads((out / "robustness.json").read_text())
    g = res["grids"]["mass_friction"]
    m = np.asarray(g["return_mean"])
    assert m.shape == (2, 2) and g["grid_mean"] == pytest.approx(m.mean())
    assert g["worst"]["return"] == pytest.approx(m.min())
    assert len(res["nominal"]["returns"]) == 2 and res["adversary"]["return_mean"] is not None
    assert (out / "mass_friction.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "grid mean" in text and "worst cell" in text and "nominal return" in text
    for bad, msg in ((["scales=[0.5,-1.0]"], "scales holds -1.0"), (["scales=[]"], "scales must be a non-empty"),
                     (["grids.mass_friction.y=mass"], "different parameters"),
                     (["grids.mass_friction.x_values=[1.0,nan]"], "x_values holds nan")):
        out2 = tmp_path / f"bad{len(msg)}"
        assert main(["robustness", f"checkpoint={run}", f"out={out2}", *bad]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert not out2.exists()
