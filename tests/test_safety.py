"""Safety rules and message conversion of the ROS 2 deployment, without DDS: the limits, the delta
clamp, the velocity limit, the stamp watchdog, and a property test that throws random and
adversarial messages at the policy node's decision core."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from sensor_msgs.msg import Image, JointState

from jobs.deploy import build_robot
from ros.messages import (
    MessageError,
    image_to_rgb,
    joint_state_to_arrays,
    joint_trajectory_to_arrays,
    make_joint_state,
    make_joint_trajectory,
    make_task_state,
    rgb_to_image,
    sec_to_stamp,
    task_state_to_dict,
)
from ros.safety import JointLimits, SafetyError, SafetyFilter, Watchdog

PANDA = build_robot(OmegaConf.load("configs/robot/panda.yaml"))


def _limits():
    return PANDA.limits


# ----- messages ---------------------------------------------------------------------------------

def test_joint_state_is_reordered_by_name_not_index():
    names = list(PANDA.arm_joints)
    q = np.linspace(-0.5, 0.5, 7)
    perm = [3, 0, 6, 1, 5, 2, 4]
    msg = make_joint_state(["extra_joint"] + [names[i] for i in perm], np.r_[9.0, q[perm]],
                           np.r_[0.0, 10 * q[perm]], stamp=12.5)
    pos, vel, stamp = joint_state_to_arrays(msg, names, need_velocity=True)
    np.testing.assert_allclose(pos, q)
    np.testing.assert_allclose(vel, 10 * q)
    assert stamp == pytest.approx(12.5)


def test_joint_state_errors_name_the_problem():
    names = list(PANDA.arm_joints)
    msg = make_joint_state(names[:5], np.zeros(5), stamp=1.0)
    with pytest.raises(MessageError, match="panda_joint6.*panda_joint7|lacks joints"):
        joint_state_to_arrays(msg, names)
    msg = make_joint_state(names, np.r_[np.zeros(6), np.nan], stamp=1.0)
    with pytest.raises(MessageError, match="panda_joint7.*NaN"):
        joint_state_to_arrays(msg, names)
    msg = make_joint_state(names, np.zeros(7), stamp=1.0)
    msg.position = [0.0] * 6
    with pytest.raises(MessageError, match="7 names but 6 positions"):
        joint_state_to_arrays(msg, names)
    msg = make_joint_state(names, np.zeros(7), stamp=0.0)
    with pytest.raises(MessageError, match="stamp is zero"):
        joint_state_to_arrays(msg, names)
    msg = make_joint_state(names, np.zeros(7), stamp=1.0)
    with pytest.raises(MessageError, match="no velocities"):
        joint_state_to_arrays(msg, names, need_velocity=True)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_image_round_trip_and_resize(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]  # grey image survives mono8 exactly
    msg = rgb_to_image(rgb, stamp=3.0, encoding=encoding)
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)
    if encoding == "mono8":
        assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(out, rgb)
    small = image_to_rgb(msg, size=16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8


def test_image_with_row_padding_and_bgr_channel_order():
    msg = Image(height=2, width=2, encoding="bgr8", step=8)  # 2 padding bytes per row
    msg.data = bytes([1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99])
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out[0, 0], [3, 2, 1])
    np.testing.assert_array_equal(out[1, 1], [12, 11, 10])


@pytest.mark.parametrize("patch,match", [
    (dict(encoding="32FC1"), "unsupported image encoding"),
    (dict(step=10), "step 10 < width"),
    (dict(height=0), "outside 1.."),
    (dict(data=b"\x00" * 5), "needs"),
])
def test_bad_images_are_rejected_with_reason(patch, match):
    msg = rgb_to_image(np.zeros((8, 8, 3), np.uint8), stamp=1.0)
    for k, v in patch.items():
        setattr(msg, k, v)
    with pytest.raises(MessageError, match=match):
        image_to_rgb(msg)


def test_trajectory_round_trip_reorders_and_checks_times():
    names = list(PANDA.arm_joints)
    pos = np.arange(14, dtype=float).reshape(2, 7) / 10
    msg = make_joint_trajectory(names, pos, dt=0.05, stamp=5.0)
    assert msg.points[1].time_from_start.nanosec == 100_000_000
    rev = names[::-1]
    t, p, stamp = joint_trajectory_to_arrays(msg, rev)
    np.testing.assert_allclose(t, [0.05, 0.1])
    np.testing.assert_allclose(p, pos[:, ::-1])
    assert stamp == pytest.approx(5.0)
    msg.points[1].time_from_start = msg.points[0].time_from_start
    with pytest.raises(MessageError, match="strictly increase"):
        joint_trajectory_to_arrays(msg, names)
    with pytest.raises(MessageError, match="NaN"):
        make_joint_trajectory(names, np.full((1, 7), np.nan), 0.05, 1.0)


def test_task_state_by_entry_name():
    msg = make_task_state({"cube_pos": np.array([0.1, 0.2, 0.8]), "robot0_eef_pos": np.array([1.0, 2.0, 3.0])},
                          stamp=2.0)
    vals, stamp = task_state_to_dict(msg, [("robot0_eef_pos", 3), ("cube_pos", 3)])
    np.testing.assert_allclose(vals["cube_pos"], [0.1, 0.2, 0.8])
    np.testing.assert_allclose(vals["robot0_eef_pos"], [1, 2, 3])
    with pytest.raises(MessageError, match="cube_quat"):
        task_state_to_dict(msg, [("cube_quat", 4)])


# ----- safety -----------------------------------------------------------------------------------

def test_limits_are_checked():
    with pytest.raises(ValueError, match="lower >= upper"):
        JointLimits(("a",), np.array([1.0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="velocity"):
        JointLimits(("a",), np.array([0.0]), np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="lacks"):
        JointLimits.from_config([{"name": "a", "lower": 0, "upper": 1}])


def test_delta_clamp_velocity_limit_and_position_limits():
    lim = _limits()
    f = SafetyFilter(lim, max_delta=0.05, velocity_scale=0.5, margin=0.01)
    q = 0.5 * (lim.lower + lim.upper)
    # a jump of 1 rad on joint 0 is clamped to the delta bound per point
    target = np.tile(q, (3, 1))
    target[:, 0] += 1.0
    safe, rep = f.filter(target, q, dt=0.05)
    bound = min(0.05, 0.5 * lim.velocity[0] * 0.05)
    np.testing.assert_allclose(safe[:, 0] - q[0], bound * np.arange(1, 4))
    assert rep["delta"] == 3
    # velocity limit binds when the delta clamp is off: 0.5 * 2.175 rad/s * 0.01 s
    f2 = SafetyFilter(lim, max_delta=None, velocity_scale=0.5)
    safe2, _ = f2.filter(target[:1], q, dt=0.01)
    assert safe2[0, 0] - q[0] == pytest.approx(0.5 * lim.velocity[0] * 0.01)
    # position limits (with margin) win over everything
    near = lim.upper - 0.005
    safe3, rep3 = f.filter(near + 0.04, near, dt=0.05)
    np.testing.assert_allclose(safe3[0], lim.upper - 0.01)
    assert rep3["limits"] > 0
    with pytest.raises(SafetyError, match="NaN"):
        f.filter(np.r_[np.nan, q[1:]], q, 0.05)


def test_measurement_outside_limits_is_refused():
    lim = _limits()
    f = SafetyFilter(lim, position_tolerance=0.05)
    q = 0.5 * (lim.lower + lim.upper)
    f.check_measurement(q)
    bad = q.copy()
    bad[3] = lim.upper[3] + 0.2
    with pytest.raises(SafetyError, match="panda_joint4"):
        f.check_measurement(bad)


@settings(max_examples=200, deadline=None)
@given(targets=st.lists(st.lists(st.floats(-1e6, 1e6), min_size=7, max_size=7), min_size=1, max_size=5),
       ref=st.lists(st.floats(-10, 10), min_size=7, max_size=7),
       dt=st.floats(1e-4, 1.0), md=st.one_of(st.none(), st.floats(1e-3, 1.0)))
def test_filter_property_finite_in_limits_bounded_steps(targets, ref, dt, md):
    lim = _limits()
    f = SafetyFilter(lim, max_delta=md, velocity_scale=0.7, margin=0.01)
    safe, _ = f.filter(np.array(targets), np.array(ref), dt)
    assert np.isfinite(safe).all()
    assert (safe >= lim.lower + 0.01 - 1e-12).all() and (safe <= lim.upper - 0.01 + 1e-12).all()
    bound = f.step_bound(dt)
    prev = np.clip(np.array(ref), f.lower, f.upper)
    for row in safe:
        assert (np.abs(row - prev) <= bound + 1e-9).all()
        prev = row


def test_watchdog_judges_by_receipt_time():
    wd = Watchdog(["joint_states", "image/front"], max_age=0.1, max_future=0.05)
    assert "no 'joint_states'" in wd.check(10.0)
    wd.observe("joint_states", 10.0)
    wd.observe("image/front", 9.95)
    assert wd.check(10.0) is None
    assert "image/front" in wd.check(10.06)           # received 0.11 s ago
    wd.observe("image/front", 9.0)                     # an earlier receipt does not move time back
    assert wd.received["image/front"] == 9.95
    wd.forget()
    assert "no 'joint_states'" in wd.check(10.0)
    with pytest.raises(ValueError, match="max_age"):
        Watchdog(["a"], max_age=0.0)


# ----- the node's decision core under random and adversarial messages --------------------------

@pytest.fixture(scope="module")
def core_factory(tmp_path_factory):
    import torch

    from control.export import MLPPolicy, load_policy, save_policy
    from ros.policy_core import PolicyCore

    layout = [["robot0_joint_pos", 7], ["robot0_joint_pos_cos", 7], ["robot0_joint_vel", 7],
              ["robot0_gripper_qpos", 2], ["cube_pos", 3]]
    meta = {"kind": "mlp", "task": "lift", "controller": "joint_position", "state_dim": 26, "action_dim": 8,
            "action_horizon": 3, "state_layout": layout, "views": ["front"], "image_size": 16,
            "obs_normalizer": None}
    torch.manual_seed(0)
    module = MLPPolicy(26, 8, hidden=[16], action_horizon=3, squash="clip")
    with torch.no_grad():  # saturating actions: every point pushes against the clamps
        module.mean.weight.mul_(100.0)
    folder = tmp_path_factory.mktemp("pol") / "policy"
    save_policy(folder, module, meta)
    policy = load_policy(folder)
    cfg = {"action_period": 0.05, "joint_step": 0.05,
           "safety": {"max_delta": 0.05, "velocity_scale": 0.5, "margin": 0.01, "position_tolerance": 0.05},
           "watchdog": {"max_age": 0.2, "max_future": 0.05}}
    return lambda: PolicyCore(policy, PANDA, cfg)


_NAMES = list(PANDA.all_joints) + ["bogus", ""]
_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-3.5, 3.5))


@st.composite
def _joint_state(draw):
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=0, max_size=11))
    if draw(st.booleans()):
        names = list(PANDA.all_joints)
        draw(st.randoms()).shuffle(names)
    n = len(names) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    msg = JointState(name=names)
    msg.position = draw(st.lists(_float, min_size=max(n, 0), max_size=max(n, 0)))
    if draw(st.booleans()):
        msg.velocity = draw(st.lists(_float, min_size=max(n, 0), max_size=max(n, 0)))
    msg.header.stamp = sec_to_stamp(draw(st.floats(0.0, 110.0)))
    return msg


@st.composite
def _image(draw):
    h, w = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    enc = draw(st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "", "jpeg"]))
    step = draw(st.integers(0, 80))
    msg = Image(height=h, width=w, encoding=enc, step=step)
    msg.data = draw(st.binary(min_size=0, max_size=1200))
    msg.header.stamp = sec_to_stamp(draw(st.floats(0.0, 110.0)))
    return msg


@st.composite
def _task_state(draw):
    vals = draw(st.lists(_float, min_size=3, max_size=3))
    key = draw(st.sampled_from(["cube_pos", "cube_quat"]))
    msg = make_task_state({key: np.zeros(3)}, stamp=draw(st.floats(0.0, 110.0)))
    msg.position = vals
    return msg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.one_of(
    st.tuples(st.just("js"), _joint_state()),
    st.tuples(st.just("img"), _image()),
    st.tuples(st.just("task"), _task_state()),
    st.tuples(st.just("tick"), st.booleans())), min_size=1, max_size=30),
    good_first=st.booleans(), t0=st.floats(100.0, 100.1))
def test_core_never_outputs_nan_or_out_of_limits(core_factory, events, good_first, t0):
    core = core_factory()
    lim = PANDA.limits
    lo, hi = lim.lower + 0.01, lim.upper - 0.01
    now = t0
    if good_first:  # a valid start so the property also covers commands, not only refusals
        q = 0.5 * (lim.lower + lim.upper)
        core.on_joint_state(make_joint_state(PANDA.all_joints, np.r_[q, 0.02, 0.02], np.zeros(9), now), now)
        core.on_image("front", rgb_to_image(np.zeros((16, 16, 3), np.uint8), now), now)
        core.on_task_state(make_task_state({"cube_pos": np.zeros(3)}, now), now)
    for kind, payload in events:
        now += 0.01
        try:
            if kind == "js":
                core.on_joint_state(payload, now)
            elif kind == "img":
                core.on_image("front", payload, now)
            elif kind == "task":
                core.on_task_state(payload, now)
        except (MessageError, SafetyError) as exc:  # rejected with a reason; the node logs and goes on
            assert str(exc)
            continue
        if kind != "tick":
            continue
        d = core.tick(now, armed=payload)
        assert d.kind in ("command", "hold", "none")
        event(d.kind)
        if d.kind == "none":
            continue
        p = d.positions
        assert np.isfinite(p).all() and (p >= lo - 1e-12).all() and (p <= hi + 1e-12).all()
        if d.kind == "command":
            bound = core.safety.step_bound(core.action_period)
            prev = np.clip(core.q, core.safety.lower, core.safety.upper)
            for row in p:
                assert (np.abs(row - prev) <= bound + 1e-9).all()
                prev = row
            assert np.isfinite(d.gripper).all()
            assert ((d.gripper >= 0.0) & (d.gripper <= 0.04)).all()
        if not payload:
            assert d.kind == "hold"  # disarming while commanding owes exactly one hold


def test_core_refuses_with_a_reason_and_resumes(core_factory):
    core = core_factory()
    lim = PANDA.limits
    q = 0.5 * (lim.lower + lim.upper)
    assert core.tick(1.0, armed=True).reason.startswith("watchdog: no 'joint_states'")
    core.on_joint_state(make_joint_state(PANDA.all_joints, np.r_[q, 0.02, 0.02], np.zeros(9), 1.0), 1.0)
    core.on_task_state(make_task_state({"cube_pos": np.zeros(3)}, 1.0), 1.0)
    d = core.tick(1.0, armed=True)
    assert d.kind == "none" and "image/front" in d.reason
    core.on_image("front", rgb_to_image(np.zeros((32, 32, 3), np.uint8), 1.0), 1.0)  # resized to 16
    d = core.tick(1.01, armed=True)
    assert d.kind == "command" and d.positions.shape == (3, 7)
    d = core.tick(1.5, armed=True)  # everything 0.5 s old
    assert d.kind == "hold" and "watchdog" in d.reason
    np.testing.assert_allclose(d.positions[0], q)
    assert core.tick(1.6, armed=True).kind == "none"  # the hold is sent once
    msg = make_joint_state(PANDA.arm_joints, q, np.zeros(7), 2.0)  # fingers missing
    with pytest.raises(MessageError, match="panda_finger_joint1"):
        core.on_joint_state(msg, 2.0)


def test_core_rejects_policies_that_do_not_fit_the_robot(core_factory):
    from ros.policy_core import PolicyCore

    policy = core_factory().policy
    ur5e = build_robot(OmegaConf.load("configs/robot/ur5e.yaml"))
    cfg = {"action_period": 0.05, "joint_step": 0.05, "safety": {}, "watchdog": {"max_age": 0.2}}
    with pytest.raises(ValueError, match="action_dim 8 does not fit robot 'ur5e'"):
        PolicyCore(policy, ur5e, cfg)
    osc = type(policy)(policy.module, {**policy.meta, "controller": "osc_pose"})
    with pytest.raises(ValueError, match="osc_pose"):
        PolicyCore(osc, PANDA, cfg)
    assert math.isfinite(PANDA.limits.velocity.sum())


def test_core_drops_commands_that_come_too_late(core_factory):
    core = core_factory()
    lim = PANDA.limits
    q = 0.5 * (lim.lower + lim.upper)
    core.on_joint_state(make_joint_state(PANDA.all_joints, np.r_[q, 0.02, 0.02], np.zeros(9), 1.0), 1.0)
    core.on_task_state(make_task_state({"cube_pos": np.zeros(3)}, 1.0), 1.0)
    core.on_image("front", rgb_to_image(np.zeros((16, 16, 3), np.uint8), 1.0), 1.0)
    assert core.tick(1.05, armed=True, clock=lambda: 1.1).kind == "command"
    d = core.tick(1.1, armed=True, clock=lambda: 1.35)  # the policy answered 0.35 s after the observations
    assert d.kind == "hold" and d.reason.startswith("late command dropped")
