"""The batched MuJoCo backend (``backend="mujoco"``) against the dm_control CPU backend.

Both run the same MuJoCo on the same models with dm_control's step and reset sequence, so for one
seed, the same actions, pushes and mass/friction scales their states agree to float64 round-off and
their float32 observations and rewards to the last bit or so.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import sim
from sim.mujoco_batched import MujocoBatchedEnv, supported_tasks

TASKS = ("cartpole-swingup", "hopper-stand", "walker-walk", "cheetah-run")


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_matches_the_cpu_backend_with_pushes_and_scales(task):
    """Same seed: same initial states; then 240 steps of the same random actions, per-env
    mass/friction scales and pushes on one body, through two time-limit resets."""
    B, steps = 2, 240
    cpu = sim.make_env(task, num_envs=B, seed=11, max_episode_steps=100)
    new = sim.make_env(task, num_envs=B, seed=11, max_episode_steps=100, backend="mujoco",
                       threads=min(2, os.cpu_count()))
    assert isinstance(new, MujocoBatchedEnv) and new.state_layout == cpu.state_layout
    (oc, _), (on, _) = cpu.reset(), new.reset()
    _same(oc["state"], on["state"])
    g = torch.Generator().manual_seed(0)
    body = cpu.body_names()[-1]
    resets = 0
    for t in range(steps):
        if t == 30:
            for env in (cpu, new):
                env.set_scales(mass=[1.4, 0.8], friction=0.6)
        if t % 23 == 5:
            wrench = 20.0 * torch.randn(B, 6, generator=g)
            for env in (cpu, new):
                env.apply_force(body, wrench, env_ids=[t % B])
        action = 2.0 * torch.rand(B, cpu.action_dim, generator=g) - 1.0
        oc, rc, tc, trc, ic = cpu.step(action)
        on, rn, tn, trn, inf = new.step(action)
        _same(oc["state"], on["state"])
        _same(rc, rn)
        assert rn.dtype == torch.float32 and on["state"].dtype == torch.float32
        assert torch.equal(tc, tn) and torch.equal(trc, trn) and torch.equal(ic["success"], inf["success"])
        assert not inf["diverged"].any()
        if trc.any():
            resets += 1
            _same(ic["final_obs"]["state"], inf["final_obs"]["state"])
    assert resets == 2
    for i in range(B):  # the raw MuJoCo states, not only the float32 observations
        np.testing.assert_allclose(new.datas[i].qpos, cpu.envs[i].data.qpos, rtol=0, atol=1e-12)
        np.testing.assert_allclose(new.datas[i].qvel, cpu.envs[i].data.qvel, rtol=0, atol=1e-12)
    assert new.get_scales() == [{"mass": 1.4, "friction": 0.6, "gain": 1.0}, {"mass": 0.8, "friction": 0.6, "gain": 1.0}]
    cpu.close()
    new.close()


@pytest.mark.parametrize("task", ["hopper-stand", "cheetah-run"])
def test_physics_threads_step_the_same_worlds(task, monkeypatch):
    """Split over threads (numba's thread-safe threading layer) after the timed first steps (forced
    here: any share pays), the worlds step exactly as on one thread, through pushes and resets."""
    import numba

    import sim.mujoco_batched as mb

    B, steps = 5, 60
    one = sim.make_env(task, num_envs=B, seed=3, max_episode_steps=25, backend="mujoco", threads=1)
    monkeypatch.setattr(mb, "MIN_SECONDS_PER_THREAD", 0.0)
    monkeypatch.setattr(mb, "MIN_THREAD_SPEEDUP", 0.0)
    monkeypatch.setattr(mb, "CALIBRATION_STEPS", 4)
    two = sim.make_env(task, num_envs=B, seed=3, max_episode_steps=25, backend="mujoco", threads=2)
    (o1, _), (o2, _) = one.reset(), two.reset()
    assert torch.equal(o1["state"], o2["state"])
    g = torch.Generator().manual_seed(1)
    body = one.body_names()[0]
    for t in range(steps):
        if t % 7 == 3:
            wrench = 30.0 * torch.randn(B, 6, generator=g)
            for env in (one, two):
                env.apply_force(body, wrench, env_ids=[0, B - 1])
        action = 2.0 * torch.rand(B, one.action_dim, generator=g) - 1.0
        r1, r2 = one.step(action), two.step(action)
        assert torch.equal(r1[0]["state"], r2[0]["state"]) and torch.equal(r1[1], r2[1])
        assert torch.equal(r1[3], r2[3])
    assert one.physics_threads == 1 and two.physics_threads == 2
    assert numba.threading_layer() in ("omp", "tbb")  # one that several Python threads may launch from
    one.close()
    two.close()


def test_without_a_thread_safe_layer_the_physics_stays_on_one_thread(monkeypatch):
    """Where no thread-safe numba threading layer loads, the split is not tried: a warning names why."""
    import sim.mujoco_batched as mb

    monkeypatch.setattr(mb, "MIN_SECONDS_PER_THREAD", 0.0)
    monkeypatch.setattr(mb, "CALIBRATION_WARMUP", 1)
    monkeypatch.setattr(mb, "parallel_threads", lambda n: (1, "no thread-safe numba threading layer (test)"))
    env = sim.make_env("cheetah-run", num_envs=4, seed=0, backend="mujoco", threads=2)
    env.reset()
    with pytest.warns(RuntimeWarning, match="one thread: no thread-safe numba threading layer"):
        env.step(torch.zeros(4, env.action_dim))
    for _ in range(3):
        env.step(torch.zeros(4, env.action_dim))
    assert env.physics_threads == 1
    env.close()


def test_a_split_that_does_not_pay_goes_back_to_one_thread(monkeypatch):
    """The calibration times one thread, then alternates the split with one thread; a split that is
    not MIN_THREAD_SPEEDUP times faster (forced here: no split can be) is undone, and the worlds
    step on exactly as on one thread through every phase."""
    import sim.mujoco_batched as mb

    B = 4
    one = sim.make_env("hopper-stand", num_envs=B, seed=5, backend="mujoco", threads=1)
    monkeypatch.setattr(mb, "MIN_SECONDS_PER_THREAD", 0.0)
    monkeypatch.setattr(mb, "CALIBRATION_WARMUP", 1)
    monkeypatch.setattr(mb, "CALIBRATION_STEPS", 2)
    monkeypatch.setattr(mb, "MIN_THREAD_SPEEDUP", float("inf"))
    two = sim.make_env("hopper-stand", num_envs=B, seed=5, backend="mujoco", threads=2)
    one.reset(), two.reset()
    g = torch.Generator().manual_seed(2)
    seen = []
    for _ in range(10):
        action = 2.0 * torch.rand(B, one.action_dim, generator=g) - 1.0
        r1, r2 = one.step(action), two.step(action)
        assert torch.equal(r1[0]["state"], r2[0]["state"]) and torch.equal(r1[1], r2[1])
        seen.append(two.physics_threads)
    # step 1 on one thread decides to try the split; steps 2-7 alternate (the first pair untimed); then one again
    assert seen == [2, 2, 2, 2, 2, 2, 1, 1, 1, 1]
    one.close()
    two.close()


def test_a_failed_step_leaves_no_force_and_no_error_behind(monkeypatch):
    """An error raised while stepping (here: the compiled loop failing, split over threads) is raised
    by that step only; the one-step push is cleared anyway; a closed env refuses."""
    import sim.mujoco_batched as mb

    monkeypatch.setattr(mb, "MIN_SECONDS_PER_THREAD", 0.0)
    monkeypatch.setattr(mb, "MIN_THREAD_SPEEDUP", 0.0)
    monkeypatch.setattr(mb, "CALIBRATION_WARMUP", 1)
    monkeypatch.setattr(mb, "CALIBRATION_STEPS", 1)
    env = sim.make_env("cheetah-run", num_envs=4, seed=0, backend="mujoco", threads=2)
    env.reset()
    zero = torch.zeros(4, env.action_dim)
    env.step(zero)
    assert env.physics_threads == 2  # the next step is the split's (calibration alternates from it)
    real = mb.step_chunks
    calls = []

    def broken(split, *args):
        calls.append(split)
        raise RuntimeError("simulated stepping error")

    body = env.body_names()[0]
    env.apply_force(body, 40.0 * torch.ones(4, 6))
    monkeypatch.setattr(mb, "step_chunks", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        env.step(zero)
    assert calls == [2]
    monkeypatch.setattr(mb, "step_chunks", real)
    assert all(not d.xfrc_applied.any() for d in env.datas)  # the push was for that step only
    assert env._pending_xfrc is None
    obs, reward, *_ = env.step(zero)  # it steps on
    assert torch.isfinite(obs["state"]).all() and torch.isfinite(reward).all()
    # a bfloat16 action is widened (numpy has no bfloat16), not refused with torch's own message
    env.step(zero.to(torch.bfloat16))
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(zero)
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_state_observation_is_one_gather_where_it_is_a_copy():
    """cheetah/walker/cartpole observations are copies of state fields (one np.take per step);
    hopper's log1p touch is not, and keeps the task's torch function."""
    for task, gathered in (("cheetah-run", True), ("walker-walk", True), ("cartpole-swingup", True),
                           ("hopper-stand", False)):
        env = sim.make_env(task, num_envs=np.int64(2), backend="mujoco")  # a numpy int is an int
        assert env.num_envs == 2 and (env._obs_columns is not None) == gathered, task
        if gathered:
            assert len(env._obs_columns) == env.state_dim
        env.close()


@pytest.fixture(scope="module")
def hopper():
    env = sim.make_env("hopper-stand", num_envs=3, seed=0, backend="mujoco", max_episode_steps=5)
    yield env
    env.close()


def test_seeds_autoreset_and_final_obs(hopper):
    env = hopper
    a, _ = env.reset(seed=4)
    b, _ = env.reset(seed=4)
    assert torch.equal(a["state"], b["state"])
    assert not torch.equal(a["state"][0], a["state"][1])  # sub-env i is seeded seed + i
    c, _ = env.reset(seed=5)
    torch.testing.assert_close(c["state"][0], a["state"][1])
    zero = torch.zeros(3, env.action_dim)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(zero)
        assert reward.shape == (3,) and not terminated.any()
        assert info["success"].dtype == torch.bool and info["diverged"].shape == (3,)
    assert truncated.all() and "final_obs" in info
    assert not torch.equal(info["final_obs"]["state"], obs["state"])  # obs is the new first observation
    fresh = env.step(zero)[3]
    assert not fresh.any()


def test_divergence_truncates_resets_and_counts(hopper):
    env = hopper
    obs, _ = env.reset(seed=0)
    before = env.num_diverged
    env.datas[1].qvel[:] = 1e12  # MuJoCo's mjWARN_BADQVEL: the world is no longer physical
    obs2, reward, terminated, truncated, info = env.step(torch.zeros(3, env.action_dim))
    assert info["diverged"].tolist() == [False, True, False]
    assert truncated.tolist() == [False, True, False] and not terminated.any()
    assert reward[1] == 0 and not info["success"][1]
    assert torch.equal(info["final_obs"]["state"][1], obs["state"][1])  # its last finite observation
    assert env.num_diverged == before + 1
    assert torch.isfinite(obs2["state"]).all()
    env.datas[2].qpos[0] = float("nan")
    info = env.step(torch.zeros(3, env.action_dim))[4]
    assert info["diverged"].tolist() == [False, False, True] and env.num_diverged == before + 2
    assert not env.step(torch.zeros(3, env.action_dim))[4]["diverged"].any()  # and it runs on


def test_non_finite_check_reads_the_task_fields_only(hopper):
    # The step's NaN/inf check sums each buffer row first and looks field by field only at rows whose
    # sum is not finite: a NaN between the task's fields, or finite values summing past float64's
    # range, must not flag an env; an inf in a field the task reads must.
    env = hopper
    env.reset(seed=0)
    span = env._span
    gaps = np.setdiff1d(np.arange(span.size), span.columns)
    assert gaps.size  # hopper's span has fields between the ones its task reads (act, ctrl, ...)
    saved = env._buf.copy()
    try:
        assert not env._non_finite_rows().any()
        env._buf[0, gaps[0]] = float("nan")
        env._buf[1, span.offsets["xpos"] + 4] = float("inf")
        env._buf[2, span.columns[:2]] = 1e308  # finite, but the row's sum overflows
        assert env._non_finite_rows().tolist() == [False, True, False]
    finally:
        env._buf[:] = saved


def test_perturbations_per_env_and_restore_nominal():
    env = sim.make_env("cheetah-run", num_envs=3, seed=2, backend="mujoco", max_force=5.0)
    ref = sim.make_env("cheetah-run", num_envs=3, seed=2, backend="mujoco")
    zero = torch.zeros(3, env.action_dim)
    env.reset(), ref.reset()
    env.apply_force("torso", torch.full((3, 6), 100.0), env_ids=[1])
    assert env._pending_xfrc[1, env._body_names.index("torso")].tolist() == [5.0] * 3 + [10.0] * 3  # clipped
    o, r = env.step(zero)[0]["state"], ref.step(zero)[0]["state"]
    assert torch.equal(o[[0, 2]], r[[0, 2]]) and not torch.equal(o[1], r[1])
    assert not env.datas[1].xfrc_applied.any()  # for one step only
    env.set_scales(mass=2.0, env_ids=[2])
    env.set_gravity(sim.gravity_tilt(30.0, "y"), env_ids=[0])
    np.testing.assert_allclose(env.models[2].body_mass, 2.0 * env._nominal["body_mass"])
    np.testing.assert_allclose(env.models[1].body_mass, env._nominal["body_mass"])
    assert env.get_gravity()[0, 0] < -4.0 and env.get_gravity()[1, 0] == 0.0
    env.set_gravity(np.tile([0.0, 0.0, -5.0], (3, 1)))
    assert (env.get_gravity()[:, 2] == -5.0).all()
    env.restore_nominal()
    assert env.get_scales() == [{"mass": 1.0, "friction": 1.0, "gain": 1.0}] * 3
    np.testing.assert_array_equal(env.get_gravity(), np.tile(env._nominal["gravity"], (3, 1)))
    (o, _), (r, _) = env.reset(seed=7), ref.reset(seed=7)
    for _ in range(20):
        o, r = env.step(zero)[0]["state"], ref.step(zero)[0]["state"]
    assert torch.equal(o, r)
    env.close()
    ref.close()


def test_views_are_rendered_per_env():
    env = sim.make_env("cartpole-swingup", num_envs=2, seed=0, backend="mujoco", views=("front",), image_size=32)
    obs, _ = env.reset()
    assert obs["images"]["front"].shape == (2, 32, 32, 3) and obs["images"]["front"].dtype == torch.uint8
    assert env.render(("side",), image_size=16)["side"].shape == (2, 16, 16, 3)
    env.close()


def test_bad_input_is_refused_and_the_env_keeps_working(hopper):
    env = hopper
    env.reset(seed=0)
    with pytest.raises(ValueError, match="task 'lift' is not supported by backend 'mujoco'; supported: "
                                         + ", ".join(supported_tasks())):
        sim.make_env("lift", backend="mujoco")
    with pytest.raises(ValueError, match=r"task 'reacher-easy' is not supported by backend 'mujoco'"):
        sim.EnvConfig("reacher-easy", backend="mujoco")
    cores = os.cpu_count()
    for bad in (0, cores + 1, True, 1.5):
        with pytest.raises(ValueError, match=rf"threads must be an int in \[1, {cores}\].*got {bad!r}"):
            sim.make_env("hopper-stand", backend="mujoco", threads=bad)
    with pytest.raises(ValueError, match="vectorization 'async' needs backend='cpu'"):
        sim.make_env("hopper-stand", backend="mujoco", vectorization="async")
    with pytest.raises(ValueError, match=r"unknown option 'foo' for backend 'mujoco'; known: max_episode_steps"):
        sim.make_env("hopper-stand", backend="mujoco", foo=1)
    with pytest.raises(ValueError, match="max_force must be a finite real number >= 0"):
        sim.make_env("hopper-stand", backend="mujoco", max_force=float("nan"))
    with pytest.raises(ValueError, match=r"action shape \(3, 2\) does not match \(num_envs, action_dim\) = \(3, 4\)"):
        env.step(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="action dtype must be floating point"):
        env.step(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="action must be a torch.Tensor or numpy array"):
        env.step([[0.0] * 4] * 3)
    bad = torch.zeros(3, 4)
    bad[2, 1] = float("nan")
    qpos = env.datas[2].qpos.copy()
    with pytest.raises(ValueError, match=r"action contains NaN or inf \(env 2"):
        env.step(bad)
    np.testing.assert_array_equal(env.datas[2].qpos, qpos)  # nothing was stepped
    for scale in (0.0, -1.0, float("inf"), "2", 1e3):
        with pytest.raises(ValueError, match=r"mass scale must be .*\[0.01, 100\]"):
            env.set_scales(mass=scale)
    with pytest.raises(ValueError, match=r"friction scale must be a float or shape \(3,\)"):
        env.set_scales(friction=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"env_ids \[5\] out of range \[0, 3\)"):
        env.set_scales(mass=1.5, env_ids=[5])
    with pytest.raises(ValueError, match="gravity must be 3 finite real numbers"):
        env.set_gravity([0.0, float("nan"), -9.81])
    with pytest.raises(ValueError, match="unknown body 'wing'"):
        env.apply_force("wing", torch.zeros(3, 6))
    with pytest.raises(ValueError, match="seed=-1"):
        env.reset(seed=-1)
    assert env.get_scales() == [{"mass": 1.0, "friction": 1.0, "gain": 1.0}] * 3
    obs, reward = env.step(torch.zeros(3, 4))[:2]
    assert torch.isfinite(obs["state"]).all() and torch.isfinite(reward).all()


def test_a_mujoco_fatal_error_in_the_compiled_loop_ends_the_process(tmp_path):
    """The documented departure from the bindings: where ``mujoco.mj_step`` raises FatalError (here:
    the arena too small for the contacts), the compiled loop's ``mj_step`` ends the process through
    MuJoCo's default handler (exit status 1, its message on stdout and in MUJOCO_LOG.TXT)."""
    import subprocess
    import sys

    script = """
import mujoco
from sim import native_step
bodies = ''.join(f'<body pos="0 0 {i * 0.05}"><freejoint/><geom size="0.1"/></body>' for i in range(30))
m = mujoco.MjModel.from_xml_string(f'<mujoco><size memory="40K"/><worldbody>{bodies}</worldbody></mujoco>')
d = mujoco.MjData(m)
try:
    mujoco.mj_step(m, d)
except mujoco.FatalError:
    print("bindings: FatalError", flush=True)
d = mujoco.MjData(m)
native_step._mj_step(m._address, d._address)
print("native: returned", flush=True)
"""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert "bindings: FatalError" in out.stdout
    assert out.returncode == 1 and "ERROR: mj_stackAlloc" in out.stdout and "native: returned" not in out.stdout
    assert "mj_stackAlloc" in (tmp_path / "MUJOCO_LOG.TXT").read_text()
