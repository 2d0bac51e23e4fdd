"""The batched simulation API on every registered task: reset, step, success, seeding, views,
perturbations and bad input. Small on purpose: 32 px images, a handful of steps."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest
import torch

import sim
from sim.render import RenderingError

TASKS = list(sim.TASKS)
ROBOSUITE = [t for t in TASKS if sim.TASKS[t].family == "robosuite"]
SIZE = 32


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


def _qpos_adr(model, joint: str) -> int:
    j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
    assert j >= 0, joint
    return int(model.jnt_qposadr[j])


def _put_in_success_state(env) -> None:
    """Teleport env 0 into a state that satisfies the task's own success check."""
    e = env.envs[0]
    m, d, name = e.model, e.data, env.task
    if e.spec_.family == "dmc":
        physics = e._env.physics
        d.qpos[:] = 0.0  # upright / extended poses
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        if name == "reacher-easy":
            physics.named.model.geom_pos["target", :2] = physics.named.data.geom_xpos["finger", :2]
        if name == "cheetah-run":
            d.qvel[0] = 12.0  # rootx, m/s
        if name == "walker-walk":
            d.qvel[1] = 1.5  # rootx, m/s
    else:
        rs = e.robosuite_env
        if name == "lift":
            d.qpos[_qpos_adr(m, "cube_joint0") + 2] = rs.table_offset[2] + 0.30
        elif name == "door":
            d.qpos[_qpos_adr(m, "Door_hinge")] = 0.5
        elif name == "stack":
            a, b = _qpos_adr(m, "cubeA_joint0"), _qpos_adr(m, "cubeB_joint0")
            d.qpos[a:a + 3] = d.qpos[b:b + 3] + np.array([0.0, 0.0, 0.0475])
            d.qpos[a + 3:a + 7] = [1, 0, 0, 0]
        elif name == "pick-place-can":
            a = _qpos_adr(m, "Can_joint0")
            target = rs.target_bin_placements[rs.object_to_id["can"]]
            d.qpos[a:a + 3] = [target[0], target[1], rs.bin2_pos[2] + 0.06]
            d.qpos[a + 3:a + 7] = [1, 0, 0, 0]
    mujoco.mj_forward(m, d)


@pytest.fixture(scope="module", params=TASKS)
def env(request):
    e = sim.make_env(request.param, num_envs=2, seed=0)
    yield e
    e.close()


def test_reset_and_step_shapes(env):
    obs, info = env.reset(seed=1)
    B, D, A = 2, env.state_dim, env.action_dim
    assert obs["state"].shape == (B, D) and obs["state"].dtype == torch.float32
    assert sum(n for _, n in env.state_layout) == D
    assert "images" not in obs
    assert info["success"].shape == (B,) and not info["success"].any()
    obs, reward, terminated, truncated, info = env.step(torch.zeros(B, A))
    assert obs["state"].shape == (B, D) and torch.isfinite(obs["state"]).all()
    assert reward.shape == (B,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert not terminated.any() and not truncated.any()
    assert info["success"].dtype == torch.bool


def test_success_signal_comes_from_the_task(env):
    env.reset(seed=0)
    if env.task != "hopper-stand":  # the hopper starts upright: its stand reward is high at first
        _, _, _, _, info = env.step(torch.zeros(2, env.action_dim))
        assert not info["success"][0]
    _put_in_success_state(env)
    _, reward, _, _, info = env.step(torch.zeros(2, env.action_dim))
    assert bool(info["success"][0]), f"{env.task}: success state not recognised (reward {reward[0]:.3f})"
    if sim.TASKS[env.task].family == "robosuite":
        assert reward[0] == pytest.approx(1.0)  # sparse task reward on success
    else:
        assert reward[0] >= sim.TASKS[env.task].success_threshold


def test_hopper_fallen_is_not_success():
    env = sim.make_env("hopper-stand", num_envs=1, seed=0)
    env.reset()
    e = env.envs[0]
    e.data.qpos[:] = 0.0
    e.data.qpos[1] = -1.0  # rootz: torso down on the floor
    e.data.qpos[2] = 1.5  # rooty: lying
    mujoco.mj_forward(e.model, e.data)
    _, _, _, _, info = env.step(torch.zeros(1, env.action_dim))
    assert not info["success"][0]
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_seeding_states_and_images(task):
    view = next(iter(sim.TASKS[task].cameras))
    digests = []
    for seed in (5, 5, 6):
        env = sim.make_env(task, num_envs=1, views=(view,), image_size=SIZE, seed=seed)
        obs, _ = env.reset()
        digests.append((_digest(obs["state"]), _digest(obs["images"][view])))
        if seed == 6:
            # Re-seeding an existing env reproduces the first run exactly.
            obs, _ = env.reset(seed=5)
            assert (_digest(obs["state"]), _digest(obs["images"][view])) == digests[0]
        env.close()
    assert digests[0] == digests[1], "same seed, different initial state or image"
    assert digests[0][0] != digests[2][0], "different seeds, identical initial state"
    assert digests[0][1] != digests[2][1], "different seeds, identical image"


@pytest.mark.parametrize("task", TASKS)
def test_every_view_renders_distinct_upright_images(task):
    spec = sim.TASKS[task]
    env = sim.make_env(task, num_envs=2, views=tuple(spec.cameras), image_size=SIZE, seed=0)
    obs, _ = env.reset()
    images = obs["images"]
    assert set(images) == set(spec.cameras)
    for view, img in images.items():
        assert img.shape == (2, SIZE, SIZE, 3) and img.dtype == torch.uint8, view
        assert img.float().std() > 5.0, f"{view} is (nearly) a flat image"
    views = list(images)
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            assert not torch.equal(images[views[i]], images[views[j]]), f"{views[i]} == {views[j]}"
    # render() on demand gives the same pixels as the observation.
    again = env.render(views)
    for v in views:
        assert torch.equal(again[v], images[v])
    env.close()


def _red_row(img: np.ndarray) -> float:
    r, g, b = (img[..., k].astype(int) for k in range(3))
    mask = (r > 120) & (g < 80) & (b < 80)
    assert mask.sum() > 0, "cube not visible"
    return float(np.argwhere(mask)[:, 0].mean())


def test_images_are_upright():
    """Lifting the red cube moves it up in the front image (row 0 is the top)."""
    env = sim.make_env("lift", num_envs=1, seed=0)
    env.reset()
    e = env.envs[0]
    low = _red_row(env.render(("front",), image_size=64)["front"][0].numpy())
    e.data.qpos[_qpos_adr(e.model, "cube_joint0") + 2] += 0.15
    mujoco.mj_forward(e.model, e.data)
    high = _red_row(env.render(("front",), image_size=64)["front"][0].numpy())
    assert high < low - 2, (low, high)
    env.close()


def _body_for_force(env) -> str:
    return {"cartpole-swingup": "cart", "reacher-easy": "arm", "cheetah-run": "torso",
            "hopper-stand": "torso", "walker-walk": "torso", "lift": "cube_main",
            "stack": "cubeA_main", "pick-place-can": "Can_main", "door": "Door_latch"}[env.task]


def _rollout(env, steps=3, seed=3, before_first_step=None):
    env.reset(seed=seed)
    states = []
    for k in range(steps):
        if k == 0 and before_first_step is not None:
            before_first_step()
        obs, *_ = env.step(torch.zeros(env.num_envs, env.action_dim))
        states.append(obs["state"].clone())
    return torch.stack(states)


def test_force_acts_for_one_step_and_is_bounded(env):
    body = _body_for_force(env)
    assert body in env.body_names()
    nominal = _rollout(env)
    wrench = torch.zeros(2, 6)
    wrench[1, 0] = 20.0  # N along +x, env 1 only
    wrench[1, 5] = 5.0  # N m about z (turns the door latch)
    pushed = _rollout(env, before_first_step=lambda: env.apply_force(body, wrench))
    assert torch.equal(pushed[:, 0], nominal[:, 0]), "the force leaked into env 0"
    assert not torch.allclose(pushed[0, 1], nominal[0, 1]), "the force did nothing"
    for e in env.envs:
        assert not e.data.xfrc_applied.any(), "xfrc_applied not cleared after the step"
    # Components beyond max_force are clipped: 1e6 N acts like max_force.
    big, capped = wrench.clone(), wrench.clone()
    big[1, 0], capped[1, 0] = 1e6, env.envs[1].max_force
    a = _rollout(env, before_first_step=lambda: env.apply_force(body, big))
    b = _rollout(env, before_first_step=lambda: env.apply_force(body, capped))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["mass", "friction", "gain"])
def test_scales_change_dynamics_and_restore(env, kind):
    nominal = _rollout(env, steps=4)
    models = [e.model for e in env.envs]
    before = [(m.body_mass.copy(), m.geom_friction.copy(), m.actuator_gainprm.copy()) for m in models]
    env.set_scales(**{kind: 3.0}, env_ids=[1])
    assert env.get_scales()[1][kind] == 3.0 and env.get_scales()[0][kind] == 1.0
    field = {"mass": "body_mass", "friction": "geom_friction", "gain": "actuator_gainprm"}[kind]
    assert np.allclose(getattr(models[1], field)[..., 0] if kind == "gain" else getattr(models[1], field),
                       3.0 * (before[1][2][..., 0] if kind == "gain" else
                              before[1][0] if kind == "mass" else before[1][1]))
    # Drive the actuators (gain) and slide the object over its support (friction).
    push = torch.full((2, env.action_dim), 0.7)
    shove = torch.zeros(2, 6)
    shove[:, 0] = 8.0

    def drive():
        env.reset(seed=3)
        states = []
        for _ in range(20):
            env.apply_force(_body_for_force(env), shove)
            obs, *_ = env.step(push)
            states.append(obs["state"].clone())
        return torch.stack(states)

    scaled = drive()
    env.restore_nominal()
    ref = drive()
    assert torch.equal(scaled[:, 0], ref[:, 0]), "scale leaked into env 0"
    if not (kind == "friction" and env.task in ("cartpole-swingup", "reacher-easy")):  # no contacts there
        assert not torch.allclose(scaled[:, 1], ref[:, 1]), f"{kind} scale changed nothing"
    for m, (mass, fric, gain) in zip(models, before, strict=True):
        assert np.array_equal(m.body_mass, mass) and np.array_equal(m.geom_friction, fric)
        assert np.array_equal(m.actuator_gainprm, gain)
    assert torch.equal(_rollout(env, steps=4), nominal)


def test_time_limit_is_truncation_with_final_obs():
    env = sim.make_env("cartpole-swingup", num_envs=2, seed=0, max_episode_steps=3)
    first, _ = env.reset()
    for _ in range(3):
        obs, _, terminated, truncated, info = env.step(torch.full((2, 1), 0.5))
    assert truncated.all() and not terminated.any()
    final = info["final_obs"]["state"]
    assert not torch.allclose(final, obs["state"]), "final_obs should be the last state, obs the new episode"
    assert not torch.equal(obs["state"], first["state"]), "the new episode continues the seed stream"
    env.close()


def test_async_workers_match_sync():
    actions = torch.linspace(-1, 1, 8).reshape(4, 2, 1)
    results = []
    for mode in ("sync", "async"):
        env = sim.make_env("cartpole-swingup", num_envs=2, seed=7, vectorization=mode,
                           views=("front",), image_size=16)
        obs, _ = env.reset()
        trace = [obs["state"]]
        for a in actions:
            obs, *_ = env.step(a)
            trace.append(obs["state"])
        env.apply_force("cart", torch.ones(2, 6))
        obs, *_ = env.step(actions[0])
        env.set_scales(mass=2.0, env_ids=[0])
        obs2, *_ = env.step(actions[0])
        results.append((torch.stack(trace), obs["state"], obs2["state"], obs2["images"]["front"]))
        env.close()
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the value and what is allowed; the env keeps working.

def test_unknown_task_view_backend():
    with pytest.raises(ValueError, match=r"unknown task 'lfit'.*known: .*lift"):
        sim.make_env("lfit")
    with pytest.raises(ValueError, match=r"unknown view 'wrist2'.*known: front, wrist, side, top"):
        sim.make_env("lift", views=("wrist2",))
    with pytest.raises(ValueError, match=r"unknown view 'wrist'.*known: front, side"):
        sim.make_env("cartpole-swingup", views=("wrist",))
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'.*known: cpu"):
        sim.make_env("lift", backend="gpu")
    with pytest.raises(ValueError, match=r"unknown controller 'osc'.*osc_pose, joint_position"):
        sim.make_env("lift", controller="osc")
    with pytest.raises(ValueError, match="num_envs"):
        sim.make_env("cartpole-swingup", num_envs=0)
    with pytest.raises(ValueError, match="image_size"):
        sim.make_env("cartpole-swingup", image_size=-4)
    with pytest.raises(ValueError, match="max_episode_steps must be >= 1, got 0"):
        sim.make_env("cartpole-swingup", max_episode_steps=0)
    env = sim.make_env("cartpole-swingup")
    with pytest.raises(ValueError, match=r"image_size must be an int in \[8, 1024\], got 0"):
        env.render(("front",), image_size=0)
    env.close()


def test_env_config_checks_with_make_env_messages_and_builds():
    """sim.EnvConfig (configs/env/*.yaml's _target_) refuses what make_env refuses, with its messages,
    and .make() is make_env with the config's fields; env.backend is the one backend switch."""
    from hydra.utils import instantiate

    from jobs.cli import compose

    bad = [(dict(name="lfit"), r"unknown task 'lfit'.*known: .*lift"),
           (dict(name="lift", backend="gpu"), r"unknown backend 'gpu'.*known: cpu"),
           (dict(name="lift", vectorization="threads"), r"unknown vectorization 'threads'; known: sync, async"),
           (dict(name="lift", image_size=7), r"image_size must be an int in \[8, 1024\], got 7"),
           (dict(name="lift", kwargs={"controller": "osc"}), r"unknown controller 'osc'.*osc_pose, joint_position"),
           (dict(name="cartpole-swingup", kwargs={"controller": "osc_pose"}), "has no controller option"),
           (dict(name="cartpole-swingup", kwargs={"backend": "warp"}),
            r"kwargs.backend is not a task option: backend is a field of the env config \(env.backend=...\)"),
           (dict(name="lift", backend="warp"), "task 'lift' is not supported by backend 'warp'")]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            sim.EnvConfig(**fields)
    for name in sorted(os.listdir(os.path.join(os.path.dirname(sim.__file__), "..", "configs", "env"))):
        cfg = instantiate(compose("train", [f"env={name[:-5]}"]).env)
        assert isinstance(cfg, sim.EnvConfig) and type(cfg.kwargs) is dict, name
    cfg = instantiate(compose("train", ["env=cartpole-swingup", "env.kwargs.max_episode_steps=3",
                                        "env.image_size=16"]).env)
    assert cfg == sim.EnvConfig("cartpole-swingup", image_size=16, kwargs={"max_episode_steps": 3})
    assert sim.EnvConfig.from_dict({"_target_": "sim.EnvConfig", **dataclasses.asdict(cfg)}) == cfg
    with pytest.raises(ValueError, match="unknown env config key 'num_envs'; known: name, image_size"):
        sim.EnvConfig.from_dict({"name": "lift", "num_envs": 2})
    env = cfg.make(num_envs=2, views=("front",), seed=4, device="cuda")  # backend cpu ignores the device
    try:
        assert (env.num_envs, env.views, env.image_size, env.seed, env.vectorization) == (2, ("front",), 16, 4, "sync")
        obs, _ = env.reset()
        assert obs["images"]["front"].shape == (2, 16, 16, 3)
        for _ in range(3):
            *_, truncated, _ = env.step(torch.zeros(2, env.action_dim))
        assert truncated.all()  # kwargs reach the task
    finally:
        env.close()
    with pytest.raises(ValueError, match="num_envs must be an int >= 1, got 0"):
        cfg.make(num_envs=0)


def test_bad_actions_seeds_bodies_scales(env):
    env.reset(seed=0)
    B, A = 2, env.action_dim
    with pytest.raises(ValueError, match=rf"action shape \(2, {A + 1}\) does not match .* \(2, {A}\)"):
        env.step(torch.zeros(B, A + 1))
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(A))
    with pytest.raises(TypeError, match="floating point.*int64"):
        env.step(torch.zeros(B, A, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        env.step([[0.0] * A] * B)
    bad = torch.zeros(B, A)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf.*env 1"):
        env.step(bad)
    bad[1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"seed=-1: must be an integer in \[0, 4294967294\]"):
        env.reset(seed=-1)
    with pytest.raises(ValueError, match=r"unknown body 'nobody'.*known: "):
        env.apply_force("nobody", torch.zeros(B, 6))
    with pytest.raises(ValueError, match="wrench shape"):
        env.apply_force(_body_for_force(env), torch.zeros(B, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.apply_force(_body_for_force(env), torch.full((B, 6), float("nan")))
    with pytest.raises(ValueError, match=r"mass scale must be a real number .* in \[0.01, 100\]"):
        env.set_scales(mass=0.0)
    with pytest.raises(ValueError, match=r"friction scale must be a real number .* in \[0.01, 100\]"):
        env.set_scales(friction=float("nan"))
    with pytest.raises(ValueError, match=r"env_ids \[5\] out of range"):
        env.set_scales(gain=2.0, env_ids=[5])
    with pytest.raises(ValueError, match="unknown view 'back'"):
        env.render(("back",))
    # ... and the env still works, with nothing changed by the refused calls.
    assert all(s == {"mass": 1.0, "friction": 1.0, "gain": 1.0} for s in env.get_scales())
    obs, *_ = env.step(torch.zeros(B, A))
    assert torch.isfinite(obs["state"]).all()


def test_negative_seed_in_make_env():
    with pytest.raises(ValueError, match=r"seed=-3: must be an integer in \[0, 4294967295\]"):
        sim.make_env("cartpole-swingup", seed=-3)


def _run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_no_gl_backend_gives_one_clear_error():
    code = ("import sim\n"
            "try:\n"
            "    env = sim.make_env('cartpole-swingup', views=('front',), image_size=16)\n"
            "    env.reset()\n"
            "except sim.render.RenderingError as e:\n"
            "    print('ERROR', e)\n")
    for value in ("bogus", "osmesa"):  # osmesa: libOSMesa is not installed on the test machines
        out = _run_python(code, MUJOCO_GL=value)
        if value == "osmesa" and "ERROR" not in out.stdout and out.returncode == 0:
            pytest.skip("this machine has a working OSMesa")
        assert "ERROR" in out.stdout and "MUJOCO_GL" in out.stdout and value in out.stdout, out
        assert "Traceback" not in out.stderr, out.stderr


def test_clean_exit_after_rendering_both_families():
    code = ("import torch, sim\n"
            "a = sim.make_env('cartpole-swingup', views=('front',), image_size=16); a.reset()\n"
            "b = sim.make_env('lift', views=('front', 'wrist'), image_size=16); b.reset()\n"
            "b.step(torch.zeros(1, b.action_dim)); a.step(torch.zeros(1, 1))\n"
            "print('rendered')\n")
    out = _run_python(code, MUJOCO_GL="egl")
    assert out.returncode == 0 and "rendered" in out.stdout, out
    assert "EGL" not in out.stderr and "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, \
        out.stderr


def test_rendering_error_type_is_exported():
    assert issubclass(RenderingError, RuntimeError)


def test_render_sizes_alternate_with_one_renderer_each():
    """Observation-sized and video-sized frames alternate (as in evaluation videos): each size keeps
    its renderer, and the observation frames are unchanged by the larger renders in between."""
    env = sim.make_env("cartpole-swingup", num_envs=1, views=["front"], image_size=24, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        big = env.render(("front",), image_size=48)["front"]
        again = env.render(("front",))["front"]
        assert big.shape == (1, 48, 48, 3) and again.shape == (1, 24, 24, 3)
        assert torch.equal(again, obs["images"]["front"])
        assert sorted(env.envs[0]._renderers) == [24, 48]
    finally:
        env.close()
