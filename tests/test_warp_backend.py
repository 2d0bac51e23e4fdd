"""The MuJoCo Warp backend against the dm_control CPU backend, on Warp's CPU device
(``DOPA_WARP_DEVICE=cuda`` runs the same checks with the worlds on a GPU).

One Warp env per task is shared by the module (the first step of a model compiles Warp kernels;
they are cached afterwards). Worlds are started from the CPU env's exact state with
``set_state``, then both backends take the same actions: observations, rewards and success must
agree to float32 precision.
"""

import math
import os

import mujoco
import numpy as np
import pytest
import torch

import sim
from sim import dmc_rewards

pytest.importorskip("mujoco_warp")

STEPS = 15
DEVICE = os.environ.get("DOPA_WARP_DEVICE", "cpu")  # where the worlds run


@pytest.fixture(scope="module")
def hopper():
    env = sim.make_env("hopper-stand", num_envs=3, backend="warp", seed=0, device=DEVICE, max_episode_steps=6)
    yield env
    env.close()


@pytest.fixture(scope="module")
def hopper_cpu():
    env = sim.make_env("hopper-stand", num_envs=1, seed=7)
    env.reset()
    yield env
    env.close()


def _physics(cpu_env, i=0):
    return cpu_env.envs[i]._env.physics


def _set_cpu_state(cpu_env, qpos, qvel):
    """Put the CPU env's dm_control physics in a given state (as its reset would) and return its obs."""
    sub = cpu_env.envs[0]
    phys = _physics(cpu_env)
    with phys.reset_context():
        phys.data.qpos[:] = qpos
        phys.data.qvel[:] = qvel
    return torch.as_tensor(sub._flatten(sub._env.task.get_observation(phys)), dtype=torch.float32)


def _standing(model):
    qpos = model.qpos0.copy()
    qpos[2] = 0.1  # torso pitch (rad): it starts upright and tips over a little
    return qpos, np.full(model.nv, 0.05)


def _compare(warp_env, cpu_env, actions, world=0, push_at=None, obs_atol=2e-3, rew_atol=1e-3):
    """Step both backends with ``actions`` [T, A]; returns the per-step max |obs diff| and the Warp rewards."""
    diffs, rewards, states = [], [], []
    for t, a in enumerate(actions):
        if push_at == t:
            wrench = torch.tensor([[30.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
            cpu_env.apply_force("torso", wrench)
            warp_env.apply_force("torso", wrench.expand(warp_env.num_envs, 6), env_ids=[world])
        batch = a.expand(warp_env.num_envs, -1)
        ow, rw, term_w, trunc_w, iw = warp_env.step(batch)
        oc, rc, _, _, ic = cpu_env.step(a[None])
        assert not term_w.any()
        np.testing.assert_allclose(ow["state"][world].cpu().numpy(), oc["state"][0].numpy(), atol=obs_atol, rtol=0)
        assert abs(float(rw[world]) - float(rc[0])) <= rew_atol, (t, float(rw[world]), float(rc[0]))
        if abs(float(rc[0]) - warp_env.spec.success_threshold) > rew_atol:
            assert bool(iw["success"][world]) == bool(ic["success"][0])
        diffs.append(float((ow["state"][world].cpu() - oc["state"][0]).abs().max()))
        rewards.append(float(rw[world]))
        states.append(ow["state"][world].cpu().clone())
    return diffs, rewards, torch.stack(states)


def test_hopper_matches_dm_control_from_the_same_state(hopper, hopper_cpu):
    assert hopper.state_layout == hopper_cpu.state_layout
    assert (hopper.state_dim, hopper.action_dim) == (hopper_cpu.state_dim, hopper_cpu.action_dim)
    assert hopper.single_action_space == hopper_cpu.single_action_space
    hopper.max_episode_steps = 1000
    try:
        hopper.reset(seed=0)
        qpos, qvel = _standing(hopper.mjmodel)
        obs_cpu = _set_cpu_state(hopper_cpu, qpos, qvel)
        obs = hopper.set_state(qpos, qvel, env_ids=[0])
        torch.testing.assert_close(obs["state"][0].cpu(), obs_cpu, atol=1e-5, rtol=0)
        g = torch.Generator().manual_seed(0)
        actions = torch.rand(STEPS, hopper.action_dim, generator=g) * 0.6 - 0.3
        # A 30 N push on the torso at step 5 goes through xfrc_applied on both backends.
        diffs, rewards, states = _compare(hopper, hopper_cpu, actions, world=0, push_at=5)
    finally:
        hopper.max_episode_steps = 6
    assert min(rewards) > 0.8  # standing: success on every step
    assert float(states[:, -2:].max()) > 1.0  # the foot touched the floor: contacts and touch sensors agree
    assert max(diffs) < 2e-3


def test_hopper_random_start_and_push_changes_only_that_world(hopper, hopper_cpu):
    hopper.max_episode_steps = 1000
    try:
        hopper_cpu.reset(seed=11)  # the suite's own randomised start (in the air, falling)
        phys = _physics(hopper_cpu)
        qpos, qvel = phys.data.qpos.copy(), phys.data.qvel.copy()
        hopper.reset(seed=0)
        hopper.set_state(qpos, qvel)  # every world from the same state
        actions = torch.rand(8, hopper.action_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1
        _compare(hopper, hopper_cpu, actions, world=1)
        hopper.apply_force("torso", torch.tensor([[0.0, 0, 0, 0, 0, 0], [40.0, 0, 40.0, 0, 0, 0], [0.0, 0, 0, 0, 0, 0]]))
        obs, *_ = hopper.step(torch.zeros(3, hopper.action_dim))
        s = obs["state"]
        torch.testing.assert_close(s[0], s[2])
        assert float((s[1] - s[0]).abs().max()) > 1e-3
        assert float(hopper._xfrc.abs().max()) == 0.0  # the push lasted one control step
    finally:
        hopper.max_episode_steps = 6


def test_per_world_scales_match_the_cpu_backend(hopper, hopper_cpu):
    hopper.max_episode_steps = 1000
    try:
        hopper.reset(seed=0)
        qpos, qvel = _standing(hopper.mjmodel)
        hopper.set_state(qpos, qvel)
        hopper.set_scales(mass=1.5, friction=0.5, gain=0.8, env_ids=[2])
        assert [s["mass"] for s in hopper.get_scales()] == [1.0, 1.0, 1.5]
        assert hopper.get_scales()[2] == {"mass": 1.5, "friction": 0.5, "gain": 0.8}
        hopper_cpu.set_scales(mass=1.5, friction=0.5, gain=0.8)
        _set_cpu_state(hopper_cpu, qpos, qvel)
        actions = torch.full((8, hopper.action_dim), 0.5)
        _compare(hopper, hopper_cpu, actions, world=2)
        hopper_cpu.restore_nominal()
        obs, *_ = hopper.step(torch.full((3, hopper.action_dim), 0.5))
        assert float((obs["state"][2] - obs["state"][0]).abs().max()) > 1e-4  # world 2 is heavier, weaker
        torch.testing.assert_close(obs["state"][0], obs["state"][1])
        with pytest.raises(ValueError, match=r"mass scale must be a real number .* in \[0.01, 100\]"):
            hopper.set_scales(mass=-1.0)
        with pytest.raises(ValueError, match="shape"):
            hopper.set_scales(friction=[1.0, 2.0])
    finally:
        hopper.restore_nominal()
        hopper.max_episode_steps = 6
    assert all(s == {"mass": 1.0, "friction": 1.0, "gain": 1.0} for s in hopper.get_scales())
    assert float((hopper._mf["body_mass"] - hopper._nominal["body_mass"]).abs().max()) == 0.0


def test_per_world_gravity_matches_the_cpu_backend_and_restores(hopper, hopper_cpu):
    hopper.max_episode_steps = 1000
    tilt = sim.gravity_tilt(20, "y")
    try:
        hopper.reset(seed=0)
        qpos, qvel = _standing(hopper.mjmodel)
        hopper.set_state(qpos, qvel)
        hopper.set_gravity(tilt, env_ids=[2])
        np.testing.assert_allclose(hopper.get_gravity(), [[0, 0, -9.81], [0, 0, -9.81], tilt], rtol=1e-6, atol=1e-6)
        hopper_cpu.set_gravity(tilt)
        _set_cpu_state(hopper_cpu, qpos, qvel)
        _compare(hopper, hopper_cpu, torch.full((8, hopper.action_dim), 0.2), world=2)
        hopper_cpu.restore_nominal()
        obs, *_ = hopper.step(torch.zeros(3, hopper.action_dim))
        assert float((obs["state"][2] - obs["state"][0]).abs().max()) > 1e-3  # world 2 leans the other way
        torch.testing.assert_close(obs["state"][0], obs["state"][1])
        with pytest.raises(ValueError, match=r"gravity must be \[3\] or \[3, 3\]"):
            hopper.set_gravity(np.zeros((2, 3)))
        with pytest.raises(ValueError, match="gravity must be 3 finite real numbers"):
            hopper.set_gravity([0.0, math.nan, -9.81])
    finally:
        hopper.restore_nominal()
        hopper.max_episode_steps = 6
    np.testing.assert_allclose(hopper.get_gravity(), [[0, 0, -9.81]] * 3, rtol=1e-6)
    np.testing.assert_allclose(hopper_cpu.get_gravity(), [[0, 0, -9.81]], rtol=1e-6)


def test_truncation_and_same_step_autoreset(hopper):
    obs0, info = hopper.reset(seed=3)
    assert obs0["state"].dtype == torch.float32 and obs0["state"].shape == (3, hopper.state_dim)
    assert not info["success"].any()
    zero = torch.zeros(3, hopper.action_dim)
    for _ in range(5):
        obs, reward, terminated, truncated, info = hopper.step(zero)
        assert not truncated.any() and not terminated.any() and "final_obs" not in info
        assert reward.shape == (3,) and reward.dtype == torch.float32
        assert torch.equal(info["success"], reward >= 0.8)
    last = obs["state"].clone()
    obs, reward, terminated, truncated, info = hopper.step(zero)  # step 6 = max_episode_steps
    assert truncated.all() and not terminated.any()
    final = info["final_obs"]["state"]
    # The final observation continues the episode; the returned one is a fresh random start.
    assert float((final - last).abs().max()) > 0
    assert float((obs["state"] - final).abs().max()) > 1e-2
    vel = slice(6, 6 + hopper.mjmodel.nv)
    assert float(obs["state"][:, vel].abs().max()) == 0.0  # a reset starts at rest
    assert float((obs["state"] - obs0["state"]).abs().max()) > 1e-2  # not the previous start
    rows = obs["state"][:, :6]  # qpos[1:]: rootz, rooty (unlimited hinge), 4 limited joints
    m = hopper.mjmodel
    for j in range(3, m.njnt):
        lo, hi = m.jnt_range[j]
        assert ((rows[:, j - 1] >= lo - 1e-6) & (rows[:, j - 1] <= hi + 1e-6)).all()
    obs, _, _, truncated, info = hopper.step(zero)
    assert not truncated.any() and "final_obs" not in info  # the episode clock restarted


def test_seeds_give_reproducible_distinct_starts(hopper):
    a = hopper.reset(seed=5)[0]["state"].clone()
    b = hopper.reset(seed=5)[0]["state"].clone()
    c = hopper.reset(seed=6)[0]["state"].clone()
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert float((a - c).abs().max()) > 1e-2
    assert float((a[0] - a[1]).abs().max()) > 1e-2  # worlds start differently


def test_bad_input_raises_clear_errors(hopper):
    hopper.reset(seed=0)
    with pytest.raises(ValueError, match=r"action shape \(2, 4\) does not match"):
        hopper.step(torch.zeros(2, 4))
    nan = torch.zeros(3, 4)
    nan[1, 2] = math.nan
    with pytest.raises(ValueError, match="NaN or inf .env 1"):
        hopper.step(nan)
    with pytest.raises(TypeError, match="floating point"):
        hopper.step(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        hopper.step([[0.0] * 4] * 3)
    with pytest.raises(ValueError, match="unknown body 'tail'"):
        hopper.apply_force("tail", torch.zeros(3, 6))
    with pytest.raises(ValueError, match="NaN or inf"):
        hopper.apply_force("torso", torch.full((3, 6), math.nan))
    with pytest.raises(ValueError, match=r"qpos shape"):
        hopper.set_state(np.zeros(3), np.zeros(hopper.mjmodel.nv))
    with pytest.raises(ValueError, match="env_ids"):
        hopper.set_scales(mass=2.0, env_ids=[3])
    with pytest.raises(ValueError, match=r"seed=-1: must be an integer in \[0, 4294967293\]"):
        hopper.reset(seed=-1)
    with pytest.raises(NotImplementedError, match="backend='cpu'"):
        hopper.render()
    with pytest.raises(ValueError, match="not supported by backend 'warp'; supported: cartpole-swingup, hopper-stand"):
        sim.make_env("reacher-easy", backend="warp", device="cpu")
    with pytest.raises(ValueError, match="renders no images"):
        sim.make_env("hopper-stand", views=("front",), backend="warp", device="cpu")
    with pytest.raises(ValueError, match="unknown option 'time_limit'"):
        sim.make_env("hopper-stand", backend="warp", device="cpu", time_limit=3)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        sim.make_env("hopper-stand", backend="warp", device="tpu")
    with pytest.raises(ValueError, match="needs backend='warp'"):
        sim.make_env("hopper-stand", backend="cpu", device="cuda")
    # Nothing above changed the env: it still steps.
    obs, *_ = hopper.step(np.zeros((3, 4), dtype=np.float32))
    assert torch.isfinite(obs["state"]).all()


def test_cartpole_matches_dm_control():
    warp_env = sim.make_env("cartpole-swingup", num_envs=2, backend="warp", seed=0, device=DEVICE)
    cpu_env = sim.make_env("cartpole-swingup", num_envs=1, seed=3)
    try:
        assert warp_env.state_layout == cpu_env.state_layout == [("position", 3), ("velocity", 2)]
        warp_env.reset()
        cpu_env.reset()
        # A swinging pole (4 rad/s): observations lagging one physics step would be off by ~0.04.
        qpos, qvel = np.array([0.1, 2.5]), np.array([0.5, 4.0])
        obs_cpu = _set_cpu_state(cpu_env, qpos, qvel)
        obs = warp_env.set_state(qpos, qvel, env_ids=[1])
        torch.testing.assert_close(obs["state"][1].cpu(), obs_cpu, atol=1e-5, rtol=0)
        actions = torch.rand(STEPS, 1, generator=torch.Generator().manual_seed(2)) * 2 - 1
        diffs, _, _ = _compare(warp_env, cpu_env, actions, world=1, obs_atol=3e-6, rew_atol=1e-6)
        # float32 rounding only (~1e-7 here); observations one RK4 stage stale would be off by ~5e-6
        assert max(diffs) < 3e-6
        # The swing-up start: cart near 0, pole hanging down (cos ~ -1), small velocities.
        start = warp_env.reset(seed=1)[0]["state"]
        assert float(start[:, 0].abs().max()) < 0.05 and float(start[:, 1].max()) < -0.99
        assert float(start[:, 3:].abs().max()) < 0.05
    finally:
        warp_env.close()
        cpu_env.close()


def test_tolerance_matches_dm_control():
    from dm_control.utils import rewards

    x = np.concatenate([np.linspace(-4, 4, 81), [np.nan, np.inf, -np.inf, 0.6, 2.0, 1.0, 10.0]])
    cases = [dict(), dict(bounds=(0.6, 2.0)), dict(margin=2), dict(bounds=(1.0, math.inf), margin=0.5,
                                                                   value_at_margin=0.5, sigmoid="linear"),
             dict(margin=1, value_at_margin=0, sigmoid="quadratic"),
             dict(bounds=(10.0, math.inf), margin=10.0, value_at_margin=0, sigmoid="linear"),
             dict(bounds=(-math.inf, 0.5), margin=1.5, value_at_margin=0.2, sigmoid="quadratic"),
             dict(bounds=(0.6, 2.0), margin=0.3), dict(bounds=(-math.inf, math.inf), margin=1.0)]
    for kw in cases:
        with np.errstate(invalid="ignore"):
            theirs = rewards.tolerance(x, **kw)
            ours_np = dmc_rewards.tolerance(x.copy(), **kw)  # numpy in, numpy out (the batched CPU backend)
        ours = dmc_rewards.tolerance(torch.as_tensor(x, dtype=torch.float64), **kw).numpy()
        assert isinstance(ours_np, np.ndarray) and ours_np.dtype == np.float64
        # NaN where the suite gives NaN, and the same values elsewhere (inside the bounds exactly 1)
        np.testing.assert_allclose(ours, theirs, atol=1e-12, rtol=0, equal_nan=True, err_msg=str(kw))
        np.testing.assert_array_equal(ours[theirs == 1.0], 1.0, err_msg=str(kw))
        # numpy: the suite's own operations, bit for bit (torch's exp may differ from numpy's in the last bit)
        np.testing.assert_array_equal(ours_np, theirs, err_msg=str(kw))
        assert dmc_rewards.tolerance(torch.as_tensor(x, dtype=torch.float32), **kw).dtype == torch.float32
        assert dmc_rewards.tolerance(x.astype(np.float32), **kw).dtype == np.float32
    with pytest.raises(ValueError, match="unknown sigmoid 'cubic'"):
        dmc_rewards.tolerance(torch.zeros(2), margin=1, sigmoid="cubic")


def test_randomize_joints_follows_the_suite_rules():
    model = mujoco.MjModel.from_xml_string("""
    <mujoco><worldbody><body><freejoint/><geom size=".1"/>
      <body><joint name="h" type="hinge" range="-0.5 0.3" limited="true"/><geom size=".1"/>
      <body><joint name="u" type="hinge"/><geom size=".1"/>
      <body><joint name="b" type="ball"/><geom size=".1"/></body></body></body></body></worldbody></mujoco>""")
    qpos = torch.as_tensor(model.qpos0, dtype=torch.float32).repeat(256, 1)
    dmc_rewards.randomize_limited_and_rotational_joints(model, qpos, torch.Generator().manual_seed(0))
    assert torch.equal(qpos[:, :3], torch.zeros(256, 3))  # free joint position untouched
    torch.testing.assert_close(qpos[:, 3:7].norm(dim=1), torch.ones(256))
    assert float(qpos[:, 7].min()) >= -0.5 and float(qpos[:, 7].max()) <= 0.3
    assert float(qpos[:, 8].min()) < -2.5 and float(qpos[:, 8].max()) > 2.5  # uniform in [-pi, pi]
    torch.testing.assert_close(qpos[:, 9:13].norm(dim=1), torch.ones(256))


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("name", ["cartpole-swingup", "hopper-stand", "walker-walk", "cheetah-run"])
def test_suite_observations_and_rewards_equal_dm_control(name, kind):
    # The task functions on dm_control's own physics state (float64, as torch tensors for the Warp
    # backend or numpy arrays for the batched CPU backend): same numbers, the input's kind out.
    from dm_control import suite

    env = suite.load(*sim.get_task(name).source, task_kwargs={"random": 0})
    env.reset()
    aspec = env.action_spec()
    rng = np.random.RandomState(0)
    for _ in range(30):
        env.step(rng.uniform(aspec.minimum, aspec.maximum))
    phys = env.physics
    d, m = phys.data, phys.model.ptr
    if name in ("hopper-stand", "walker-walk"):
        d.qpos[:] = m.qpos0  # upright: standing reward
    if name == "cartpole-swingup":
        d.qpos[1] = 0.3  # pole near upright
    if name in ("cheetah-run", "walker-walk"):
        d.qvel[0] = 4.0  # forward speed: running / walking reward
    phys.forward()
    observation, reward = env.task.get_observation(phys), env.task.get_reward(phys)
    as_kind = torch.as_tensor if kind == "torch" else np.asarray
    f64 = lambda x, *shape: as_kind(np.array(x))[None].reshape(1, *shape)  # noqa: E731
    state = dmc_rewards.DeviceState(
        qpos=f64(d.qpos, m.nq), qvel=f64(d.qvel, m.nv), ctrl=f64(d.ctrl, m.nu), xpos=f64(d.xpos, m.nbody, 3),
        xipos=f64(d.xipos, m.nbody, 3), xmat=f64(d.xmat, m.nbody, 9), sensordata=f64(d.sensordata, m.nsensordata))
    task = dmc_rewards.make_suite_task(name, m)
    obs = task.observation(state)
    assert list(obs) == list(observation)
    kind_type = torch.Tensor if kind == "torch" else np.ndarray
    for key, value in observation.items():
        assert isinstance(obs[key], kind_type), key
        np.testing.assert_allclose(np.asarray(obs[key]).reshape(-1), np.ravel(value), atol=1e-12, err_msg=key)
    assert reward > 0.05  # a non-trivial reward is compared
    ours = task.reward(state)
    assert isinstance(ours, kind_type) and ours.shape == (1,)
    assert abs(float(ours[0]) - reward) < 1e-12


def test_cheetah_settles_and_runs_as_dm_control():
    # Cheetah's initialize_episode: limited joints uniform in range, then 200 physics steps with
    # zero control (dm_control's legacy step: the first one still sees the default pose's contacts).
    warp_env = sim.make_env("cheetah-run", num_envs=2, backend="warp", seed=0, device=DEVICE)
    cpu_env = sim.make_env("cheetah-run", num_envs=1, seed=0)
    try:
        start = warp_env.reset()[0]["state"]
        assert float(start[:, 8:].abs().max()) < 2.0  # settled: nearly at rest
        cpu_env.reset()
        phys = _physics(cpu_env)
        m = phys.model
        limited = m.jnt_limited == 1
        qpos = m.qpos0.copy()
        qpos[limited] = np.random.RandomState(1).uniform(*m.jnt_range[limited].T)
        sub = cpu_env.envs[0]
        with phys.reset_context():
            phys.data.qpos[:] = qpos
            phys.step(nstep=200)
            phys.data.time = 0
        obs_cpu = torch.as_tensor(sub._flatten(sub._env.task.get_observation(phys)), dtype=torch.float32)
        obs = warp_env.set_state(qpos, np.zeros(m.nv), env_ids=[1], settle=True)
        torch.testing.assert_close(obs["state"][1].cpu(), obs_cpu, atol=1e-4, rtol=0)
        actions = torch.rand(5, warp_env.action_dim, generator=torch.Generator().manual_seed(4)) * 2 - 1
        diffs, _, _ = _compare(warp_env, cpu_env, actions, world=1, obs_atol=1e-3, rew_atol=1e-4)
        assert max(diffs) < 1e-3
    finally:
        warp_env.close()
        cpu_env.close()


def test_divergence_raises_or_resets_the_world(hopper):
    hopper.max_episode_steps = 1000
    try:
        hopper.reset(seed=0)
        qpos, qvel = _standing(hopper.mjmodel)
        wild = np.tile(qvel, (3, 1))
        wild[1] = 1e30  # world 1 blows up within one step
        before = hopper.set_state(np.tile(qpos, (3, 1)), wild)["state"]
        zero = torch.zeros(3, hopper.action_dim)
        with pytest.raises(FloatingPointError, match=r"NaN or inf in worlds \[1\]"):
            hopper.step(zero)
        before = hopper.set_state(np.tile(qpos, (3, 1)), wild)["state"]
        hopper.on_divergence = "reset"
        counted = hopper.num_diverged
        obs, reward, terminated, truncated, info = hopper.step(zero)
        assert info["diverged"].tolist() == [False, True, False] and hopper.num_diverged == counted + 1
        assert truncated.tolist() == [False, True, False] and not terminated.any()
        assert torch.isfinite(obs["state"]).all() and torch.isfinite(reward).all() and float(reward[1]) == 0.0
        torch.testing.assert_close(info["final_obs"]["state"][1], before[1])  # its last finite observation
        torch.testing.assert_close(obs["state"][0], obs["state"][2])  # the other worlds stepped on
        assert float(obs["state"][1, 6:13].abs().max()) == 0.0  # world 1 restarted at rest
    finally:
        hopper.on_divergence = "raise"
        hopper.max_episode_steps = 6
    with pytest.raises(ValueError, match="unknown on_divergence 'ignore'"):
        sim.make_env("hopper-stand", backend="warp", device="cpu", on_divergence="ignore")


def test_the_suite_time_limit_also_truncates(hopper):
    assert hopper.suite_step_limit == 1000  # hopper: 20 s at 0.02 s per control step
    hopper.max_episode_steps, hopper.suite_step_limit = 10**9, 2
    try:
        hopper.reset(seed=0)
        zero = torch.zeros(3, hopper.action_dim)
        assert not hopper.step(zero)[3].any()
        assert hopper.step(zero)[3].all()
    finally:
        hopper.max_episode_steps, hopper.suite_step_limit = 6, 1000.0
