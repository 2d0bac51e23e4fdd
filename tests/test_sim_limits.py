"""The allowed ranges of the sim API (sim/limits.py) on the CPU backend, gravity as a perturbation,
and physics divergence: a diverging sub-env is truncated and reset, never a crash.

Small on purpose: 16 px images, two envs, a few hundred control steps on the cheapest tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sim
from sim import limits

SIZE = 16


@pytest.fixture(scope="module")
def cartpole():
    env = sim.make_env("cartpole-swingup", num_envs=2, seed=0, image_size=SIZE)
    env.reset()
    yield env
    env.close()


# ---------------------------------------------------------------------------------------------
# Item 5: wrench bounds

@pytest.mark.parametrize("key", ["max_force", "max_torque"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -5, -0.1, True, "5", None, [1.0]])
def test_bad_wrench_bounds_are_refused_in_one_line(key, value):
    unit = "N" if key == "max_force" else "N m"
    msg = rf"^{key} must be a finite real number >= 0 \({unit}\), got "
    with pytest.raises(ValueError, match=msg) as info:
        sim.make_env("cartpole-swingup", **{key: value})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=msg):  # the MuJoCo Warp backend: the same check, before any Warp import
        sim.make_env("cartpole-swingup", backend="warp", device="cpu", **{key: value})


def test_zero_wrench_bounds_mean_no_push(cartpole):
    env = sim.make_env("cartpole-swingup", num_envs=1, seed=0, max_force=0, max_torque=0.0)
    try:
        env.reset(seed=0)
        ref = [env.step(torch.zeros(1, 1))[0]["state"] for _ in range(3)]
        env.reset(seed=0)
        env.apply_force("cart", torch.tensor([[40.0, 0, 0, 0, 0, 3.0]]))
        pushed = [env.step(torch.zeros(1, 1))[0]["state"] for _ in range(3)]
        assert all(torch.equal(a, b) for a, b in zip(ref, pushed, strict=True))
        assert env.envs[0].max_force == 0.0 and env.envs[0].max_torque == 0.0
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# Item 6: render's image size and views

@pytest.mark.parametrize("size", [4097, 1025, 1, 7, 0, -4, 2.7, 64.0, True, "64"])
def test_render_image_size_has_make_envs_check(cartpole, size):
    with pytest.raises(ValueError, match=r"^image_size must be an int in \[8, 1024\], got "):
        cartpole.render(("front",), image_size=size)


def test_render_refuses_repeated_views_and_renders_the_allowed_sizes(cartpole):
    with pytest.raises(ValueError, match=r"^view 'front' is repeated in \['front', 'front'\]"):
        cartpole.render(["front", "front"])
    with pytest.raises(ValueError, match=r"^view 'side' is repeated"):
        sim.make_env("cartpole-swingup", views=("side", "front", "side"))
    with pytest.raises(ValueError, match=r"views must name at least one view; known: front, side"):
        cartpole.render([])
    frames = cartpole.render(["front", "side"], image_size=8)
    assert list(frames) == ["front", "side"] and frames["front"].shape == (2, 8, 8, 3)
    assert frames["front"].dtype == torch.uint8 and not torch.equal(frames["front"], frames["side"])
    assert cartpole.render("front", image_size=np.int64(12))["front"].shape == (2, 12, 12, 3)


# ---------------------------------------------------------------------------------------------
# Item 7 (sim side): seeds

def test_seeds_must_fit_32_bits_for_every_sub_env(cartpole):
    with pytest.raises(ValueError, match=r"^seed=4294967296: must be an integer in \[0, 4294967295\]"):
        sim.make_env("cartpole-swingup", seed=2**32)
    with pytest.raises(ValueError, match=r"^seed=4294967295: must be an integer in \[0, 4294967294\].* 2 sub"):
        sim.make_env("cartpole-swingup", num_envs=2, seed=2**32 - 1)
    for bad in (-3, True, 1.0, "0", 2**64):
        with pytest.raises(ValueError, match=rf"^seed={bad!r}: must be an integer"):
            sim.make_env("cartpole-swingup", seed=bad)
    with pytest.raises(ValueError, match=r"^seed=4294967295: must be an integer in \[0, 4294967294\]"):
        cartpole.reset(seed=2**32 - 1)
    obs, _ = cartpole.reset(seed=np.uint32(2**32 - 2))  # the largest seed two envs can take
    assert torch.isfinite(obs["state"]).all()


# ---------------------------------------------------------------------------------------------
# Item 8: scales

@pytest.mark.parametrize("value", ["2", True, np.True_, 1e-300, 0.0, -1.0, 0.009, 100.5, math.nan, math.inf,
                                   [1.0, "a"], [1.0, 1e-3], torch.tensor([1.0, 1e4])])
def test_scales_are_real_numbers_in_the_documented_range(cartpole, value):
    assert limits.SCALE_RANGE == sim.SCALE_RANGE == (0.01, 100.0)
    with pytest.raises(ValueError, match=r"^mass scale must be a real number .* in \[0.01, 100\]"):
        cartpole.set_scales(mass=value)
    with pytest.raises(ValueError, match=r"^gain scale must be a real number"):
        cartpole.set_scales(friction=2.0, gain=value)  # refused as a whole: friction is not changed either
    assert cartpole.get_scales() == [{"mass": 1.0, "friction": 1.0, "gain": 1.0}] * 2
    assert "[0.01, 100]" in type(cartpole).set_scales.__doc__


def test_scales_at_the_ends_of_the_range_step_finite(cartpole):
    try:
        cartpole.set_scales(mass=[0.01, 100.0], friction=0.01, gain=np.float32(100.0))
        assert [s["mass"] for s in cartpole.get_scales()] == [0.01, 100.0]
        cartpole.reset(seed=0)
        for _ in range(20):
            obs, reward, *_ = cartpole.step(torch.ones(2, 1))
            assert torch.isfinite(obs["state"]).all() and torch.isfinite(reward).all()
    finally:
        cartpole.restore_nominal()


# ---------------------------------------------------------------------------------------------
# Item 9: unknown options

def test_unknown_option_lists_the_tasks_options():
    with pytest.raises(ValueError) as info:
        sim.make_env("cartpole-swingup", bogus=1)
    assert str(info.value) == ("unknown option 'bogus' for task 'cartpole-swingup' (backend 'cpu'); known: "
                               "max_episode_steps, max_force, max_torque, time_limit, environment_kwargs")
    with pytest.raises(ValueError, match=r"^unknown option 'random' for task 'hopper-stand'"):
        sim.make_env("hopper-stand", random=3)  # the seed sets the suite's random
    with pytest.raises(ValueError, match=r"^unknown option 'bogus' for task 'lift' .*controller, reward_shaping, "
                                         r"terminate_on_success, .*table_friction"):
        sim.make_env("lift", bogus=1)
    with pytest.raises(ValueError, match=r"^unknown option 'bogus' for task 'cartpole-swingup'"):
        sim.EnvConfig("cartpole-swingup", kwargs={"bogus": 1})  # validated when the config is made
    assert "single_object_mode" not in sim.task_options("pick-place-can")  # the task class fixes it
    assert "bin1_pos" in sim.task_options("pick-place-can")
    env = sim.make_env("cartpole-swingup", time_limit=0.05)  # a suite option is passed through
    try:
        env.reset()
        ends = [bool(env.step(torch.zeros(1, 1))[3][0]) for _ in range(5)]
        assert ends == [False, False, False, False, True]  # the suite's 0.05 s limit: 5 steps of 0.01 s
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# Item 14: gravity

def test_gravity_per_env_is_applied_and_restored(cartpole):
    gravity = np.array(cartpole.get_gravity())
    np.testing.assert_allclose(gravity, [[0, 0, -9.81]] * 2)
    np.testing.assert_allclose(sim.gravity_tilt(90, "y"), [-9.81, 0, 0], atol=1e-12)
    np.testing.assert_allclose(sim.gravity_tilt(30, "x"), [0, 9.81 * 0.5, -9.81 * math.cos(math.radians(30))])

    def cart_speed():
        cartpole.reset(seed=5)
        for _ in range(25):
            obs, *_ = cartpole.step(torch.zeros(2, 1))
        return obs["state"][:, 3]  # cart velocity (m/s): position [1], cos, sin, velocity [2]

    ref = cart_speed()
    cartpole.set_gravity(sim.gravity_tilt(30, "y"), env_ids=[1])  # gravity leans to -x: the cart rolls that way
    np.testing.assert_allclose(cartpole.get_gravity()[0], gravity[0])
    tilted = cart_speed()
    assert float(tilted[0]) == float(ref[0]) and float(tilted[1]) < float(ref[1]) - 0.5
    cartpole.set_gravity(torch.tensor([[0.0, 0.0, -9.81], [0.0, 0.0, -1.62]]))  # [B, 3]: the moon for env 1
    np.testing.assert_allclose(cartpole.get_gravity()[1], [0, 0, -1.62], rtol=1e-6)
    for bad, msg in (([0, 0], "gravity must be 3 finite"), ([0, 0, math.nan], "gravity must be 3 finite"),
                     ("down", "gravity must be 3 finite"), (np.zeros((3, 3)), r"gravity must be \[3\] or \[2, 3\]"),
                     ([[0, 0, -9.81], [0, 0, math.inf]], "gravity must be 3 finite")):
        with pytest.raises(ValueError, match=msg):
            cartpole.set_gravity(bad)
    np.testing.assert_allclose(cartpole.get_gravity()[1], [0, 0, -1.62], rtol=1e-6)  # refused: unchanged
    cartpole.envs[0].model.opt.gravity[:] = [1.0, 2.0, 3.0]  # changed by hand: restored all the same
    cartpole.restore_nominal()
    np.testing.assert_allclose(cartpole.get_gravity(), gravity)
    assert torch.equal(cart_speed(), ref)
    with pytest.raises(ValueError, match=r"gravity tilt must be a finite real number of degrees"):
        sim.gravity_tilt(math.nan)


# ---------------------------------------------------------------------------------------------
# Contract 3: divergence

@pytest.mark.parametrize("task, body", [("cheetah-run", "torso"), ("hopper-stand", "torso")])
def test_forced_divergence_truncates_resets_and_counts(task, body):
    env = sim.make_env(task, num_envs=2, seed=0, views=("front",), image_size=SIZE)
    try:
        obs, _ = env.reset()
        zero = torch.zeros(2, env.action_dim)
        last, _, _, _, info = env.step(zero)
        assert info["diverged"].tolist() == [False, False] and env.num_diverged == 0
        env.envs[1]._env.physics.data.qvel[:] = 1e30  # world 1 is blown up by hand
        obs, reward, terminated, truncated, info = env.step(zero)
        assert info["diverged"].tolist() == [False, True] and env.num_diverged == 1
        assert truncated.tolist() == [False, True] and not terminated.any()
        assert float(reward[1]) == 0.0 and not bool(info["success"][1])
        assert torch.equal(info["final_obs"]["state"][1], last["state"][1])  # its last finite observation
        assert torch.equal(info["final_obs"]["images"]["front"][1], last["images"]["front"][1])
        obs, reward, terminated, truncated, info = env.step(zero)  # both step on from their states
        assert not info["diverged"].any() and not truncated.any() and torch.isfinite(obs["state"]).all()
        assert env.num_diverged == 1
    finally:
        env.close()


@pytest.mark.parametrize("task, body", [("cheetah-run", "torso"), ("hopper-stand", "torso")])
def test_long_absurd_pushes_never_crash(task, body):
    """Pushes of 1e9 N / N m (an allowed bound) on bodies at 0.01x mass, 100 steps: nothing raises, all stays finite."""
    env = sim.make_env(task, num_envs=2, seed=0, max_force=1e9, max_torque=1e9)
    try:
        env.reset()
        env.set_scales(mass=limits.SCALE_RANGE[0])
        push = torch.zeros(2, 6)
        push[:, 0], push[:, 2], push[:, 4] = 1e9, -1e9, 1e9
        for t in range(100):
            env.apply_force(body, push * (1 if t % 2 else -1))
            obs, reward, terminated, truncated, info = env.step(torch.ones(2, env.action_dim))
            assert torch.isfinite(obs["state"]).all() and torch.isfinite(reward).all()
            assert not (info["diverged"] & ~truncated).any() and not terminated.any()
        assert env.num_diverged > 1, "a 1e9 N push on a 0.01x mass should diverge"
        env.apply_force(body, push)
        env.restore_nominal()  # drops the queued push too
        env.reset(seed=0)
        diverged = env.num_diverged
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(torch.zeros(2, env.action_dim))
            assert torch.isfinite(obs["state"]).all() and not info["diverged"].any()
        assert env.num_diverged == diverged
    finally:
        env.close()


def test_robosuite_gravity_and_divergence_without_a_simulator_error():
    """robosuite keeps a set gravity over its resets; it steps MuJoCo directly (no PhysicsError), so
    the bad-qvel warning marks the divergence."""
    env = sim.make_env("lift", num_envs=1, seed=0)
    cube_z = [k for k, _ in env.state_layout].index("cube_pos")
    cube_z = sum(n for _, n in env.state_layout[:cube_z]) + 2

    def lifted():  # cube height change (m) over 10 steps from a fresh episode
        obs, _ = env.reset(seed=0)
        z0 = float(obs["state"][0, cube_z])
        for _ in range(10):
            obs, *_ = env.step(torch.zeros(1, env.action_dim))
        return float(obs["state"][0, cube_z]) - z0

    ref = lifted()
    env.set_gravity([0.0, 0.0, 9.81])  # upside down: the cube leaves the table
    assert lifted() > ref + 0.5
    env.restore_nominal()
    assert lifted() == ref
    try:
        env.reset()
        sub = env.envs[0]
        sub.data.qvel[:] = 1e30
        obs, reward, terminated, truncated, info = env.step(torch.zeros(1, env.action_dim))
        assert info["diverged"].tolist() == [True] and truncated.tolist() == [True] and env.num_diverged == 1
        assert torch.isfinite(obs["state"]).all() and torch.isfinite(info["final_obs"]["state"]).all()
        obs, *_, info = env.step(torch.zeros(1, env.action_dim))
        assert torch.isfinite(obs["state"]).all() and not info["diverged"].any()
    finally:
        env.close()
