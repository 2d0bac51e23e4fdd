"""Scripted experts on the real robosuite tasks: success, keyframes, physical progress, imperfections.

Few seeds and no cameras: rendering is what costs on CPU, and none is needed to check the physics.
"""

import numpy as np
import pytest
import torch

import sim
from sim.demos import allocate_imperfections, record_episode
from sim.experts import EXPERT_TASKS, ProgressFunction, ScriptedExpert

_ENVS = {}


def _env(task, controller="osc_pose"):
    """One env per (task, controller) for the whole module (robosuite construction is the slow part)."""
    key = (task, controller)
    if key not in _ENVS:
        limit = sim.get_task(task).max_episode_steps * (2 if controller == "joint_position" else 1)
        _ENVS[key] = sim.make_env(task, num_envs=1, seed=0, controller=controller, max_episode_steps=limit + 1,
                                  terminate_on_success=False)
    return _ENVS[key]


@pytest.fixture(scope="module", autouse=True)
def _close_envs():
    yield
    for env in _ENVS.values():
        env.close()
    _ENVS.clear()


def _episode(task, seed, imperfection="none", controller="osc_pose", **kw):
    env = _env(task, controller)
    expert = ScriptedExpert(env, seed=seed)
    limit = sim.get_task(task).max_episode_steps * (2 if controller == "joint_position" else 1)
    return record_episode(env, expert, seed=seed, imperfection=imperfection, max_steps=limit, **kw)


def _check_keyframes(ep, n_subtasks):
    kf = np.asarray(ep.keyframes)
    assert kf.dtype == np.int64
    assert kf.size <= n_subtasks
    assert np.all(np.diff(kf) > 0), kf
    if kf.size:
        assert 1 <= kf.min() and kf.max() <= ep.num_steps, (kf, ep.num_steps)
    assert ep.keyframe_names == list(sim.get_task(ep.task).subtasks[: kf.size])


@pytest.mark.parametrize("task,seed", [("lift", 3), ("stack", 4), ("pick-place-can", 5), ("door", 6)])
def test_expert_succeeds_with_keyframes_and_progress(task, seed):
    ep = _episode(task, seed)
    n = len(sim.get_task(task).subtasks)
    assert ep.success, f"{task} seed {seed}: expert failed (keyframes {ep.keyframes.tolist()})"
    _check_keyframes(ep, n)
    assert ep.keyframes.size == n  # every sub-task ended
    p = ep.progress
    assert p.shape == (ep.num_steps + 1,) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0
    assert p[0] < 0.05 and p[-1] == 1.0
    # at each keyframe at least that many sub-tasks' worth of progress has been made
    for j, k in enumerate(ep.keyframes):
        assert p[k] >= (j + 1) / n - 1e-6, (j, k, p[k])
    # the reward is the task's sparse success reward
    assert ep.rewards[-1] == 1.0 and ep.rewards[0] == 0.0
    assert ep.dones[-1] == 1 and ep.dones[:-1].sum() == 0


def test_joint_position_expert_succeeds():
    env = _env("lift", "joint_position")
    assert env.action_dim == 8  # 7 joint deltas + gripper
    ep = _episode("lift", 7, controller="joint_position")
    assert ep.success
    _check_keyframes(ep, 3)
    assert ep.keyframes.size == 3 and ep.progress[-1] == 1.0


def test_batched_expert_runs_each_env_its_own_episode():
    """Two sub-envs through the batched API: one clean, one regressing; keyframes per env; the
    env's same-step autoreset at its time limit starts new phase machines."""
    env = sim.make_env("lift", num_envs=2, seed=0, max_episode_steps=62, terminate_on_success=False)
    try:
        expert = ScriptedExpert(env, imperfection=["none", "regress"], seed=0)
        env.reset(seed=40)
        expert.reset()
        for _ in range(61):
            action = expert.act()
            assert action.shape == (2, 7) and action.dtype == torch.float32
            assert float(action.abs().max()) <= 1.0
            _, _, terminated, truncated, info = env.step(action)
            assert not (terminated | truncated).any()
            expert.observe_step(terminated | truncated)
        for i in range(2):
            kf = expert.keyframes(i)
            assert len(kf) == 3 and kf == sorted(set(kf)) and kf[0] >= 1
        assert info["success"].tolist() == [True, False]
        assert expert.undone(0) is None and expert.undone(1) is not None
        assert expert.progress(0) == 1.0 and expert.progress(1) < 0.5
        _, _, terminated, truncated, _ = env.step(expert.act())  # the time limit: both autoreset
        assert truncated.all()
        expert.observe_step(terminated | truncated)
        assert expert.keyframes(0) == [] and expert.keyframes(1) == [] and expert.progress(0) < 0.05
    finally:
        env.close()


def test_regress_lift_releases_the_cube_and_progress_falls():
    env = _env("lift")
    ep = _episode("lift", 8, imperfection="regress")
    assert ep.imperfection == "regress" and not ep.success
    assert ep.keyframes.size == 3  # it did lift before letting go
    cube_z = ep.states[:, _state_slice(env, "cube_pos")][:, 2]
    top = int(np.argmax(cube_z))
    assert cube_z[top] - cube_z[-1] > 0.03, "the cube did not fall back"
    assert ep.progress[top] == 1.0 and ep.progress[-1] < 0.5
    assert np.all(np.diff(ep.progress[top:]) <= 1e-6) or ep.progress[-1] < ep.progress[top] - 0.5


def test_regress_door_pushes_the_door_back():
    env = _env("door")
    ep = _episode("door", 9, imperfection="regress", undo_steps=30)
    hinge = ep.states[:, _state_slice(env, "hinge_qpos")][:, 0]
    assert ep.keyframes.size == 4 and hinge.max() > 0.3
    assert hinge.max() - hinge[-1] > 0.05, f"door angle {hinge.max():.3f} -> {hinge[-1]:.3f}"
    assert not ep.success and ep.progress[-1] < 1.0 - 0.05


def test_stop_ends_short_of_the_goal_and_noise_changes_actions():
    ep = _episode("lift", 10, imperfection="stop", stop_steps=15)
    assert ep.imperfection == "stop" and not ep.success
    assert ep.keyframes.size < 3
    assert ep.progress[-1] < 1.0
    # stopped: the last 10 arm actions are zero
    assert np.all(ep.actions[-10:, :-1] == 0.0)
    clean = _episode("lift", 11)
    noisy = _episode("lift", 11, imperfection="noise")
    assert noisy.imperfection == "noise"
    assert np.abs(noisy.actions[:5, :-1] - clean.actions[:5, :-1]).max() > 0.05


def test_progress_is_physical_not_time():
    """Progress read from a state after a manual undo matches the undone state: lift the cube by
    teleporting it, progress rises; put it back on the table, progress falls again."""
    env = _env("lift")
    env.reset(seed=12)
    e = env.envs[0]
    fn = ProgressFunction("lift")
    fn.reset(e)
    p0 = fn()
    rs = e.robosuite_env
    jnt = rs.cube.joints[0]
    qpos = rs.sim.data.get_joint_qpos(jnt).copy()
    eef = fn.scene.eef
    near = qpos.copy()
    near[:3] = eef  # the cube at the fingers: reach is complete
    rs.sim.data.set_joint_qpos(jnt, near)
    rs.sim.forward()
    assert fn() >= 1 / 3 - 1e-6 > p0
    rs.sim.data.set_joint_qpos(jnt, qpos)
    rs.sim.forward()
    assert fn() == pytest.approx(p0)


def test_bad_inputs_give_clear_errors():
    env = _env("lift")
    with pytest.raises(ValueError, match="unknown imperfection 'wobble'.*none, noise, stop, regress"):
        ScriptedExpert(env, imperfection="wobble")
    with pytest.raises(ValueError, match="no scripted expert for task 'cartpole-swingup'"):
        ProgressFunction("cartpole-swingup")
    with pytest.raises(ValueError, match="imperfection list has 2 entries for 1 envs"):
        ScriptedExpert(env, imperfection=["none", "noise"])
    expert = ScriptedExpert(env)
    with pytest.raises(RuntimeError, match="reset"):
        expert.act()
    # the recorder refuses an env whose own time limit would autoreset before the last frame
    with pytest.raises(ValueError, match="must exceed max_steps"):
        record_episode(env, expert, seed=0, max_steps=500)
    assert set(EXPERT_TASKS) == {"lift", "stack", "pick-place-can", "door"}


def test_allocate_imperfections():
    plan = allocate_imperfections(10, {"none": 0.7, "noise": 0.1, "stop": 0.1, "regress": 0.1}, seed=0)
    assert sorted(plan) == sorted(["none"] * 7 + ["noise", "stop", "regress"])
    assert plan == allocate_imperfections(10, {"none": 0.7, "noise": 0.1, "stop": 0.1, "regress": 0.1}, seed=0)
    with pytest.raises(ValueError, match="unknown imperfection 'drop'"):
        allocate_imperfections(3, {"drop": 1.0}, 0)
    with pytest.raises(ValueError, match="not all 0"):
        allocate_imperfections(3, {"none": 0.0}, 0)


def _state_slice(env, key):
    start = 0
    for k, size in env.state_layout:
        if k == key:
            return slice(start, start + size)
        start += size
    raise KeyError(key)
