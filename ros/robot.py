"""Robot descriptions (``configs/robot/<name>.yaml``, ``_target_: ros.robot.Robot``) as checked objects.

A robot config names the arm's joints with their limits, the optional gripper, the ROS topics of
its ros2_control controllers and cameras, how the policy's proprioceptive state keys are read
from ``sensor_msgs/JointState`` (``state_from_joints``), and, for the MuJoCo stand-in, which
simulator joints play which robot joints (``sim``). The deploy jobs build it from the config's
``_target_`` (``jobs.deploy.build_robot``); every rule is checked once, in the dataclasses'
``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ros.safety import JointLimits

FIELDS = ("position", "velocity")
FNS = ("identity", "cos", "sin")
GROUPS = ("arm", "gripper")
DISCOVERY_RANGES = ("LOCALHOST", "SUBNET", "SYSTEM_DEFAULT", "OFF")


@dataclasses.dataclass(frozen=True)
class StateFromJoints:
    """How one policy state key is read from JointState.

    Raises:
        ValueError: an unknown joint group, field or fn (allowed values listed).
    """

    key: str
    """The policy state key (robosuite's name, e.g. ``robot0_joint_pos``)."""
    joints: str
    """Which joints: ``arm`` | ``gripper``."""
    field: str = "position"
    """Which JointState field: ``position`` (rad, m) | ``velocity`` (rad/s, m/s)."""
    fn: str = "identity"
    """Applied elementwise: ``identity`` | ``cos`` | ``sin``."""
    sign: tuple[float, ...] | None = None
    """Per-joint factor mapping the robot's convention to the one the policy was trained in."""

    def __post_init__(self):
        key = self.key
        object.__setattr__(self, "joints", str(self.joints))
        object.__setattr__(self, "field", str(self.field))
        object.__setattr__(self, "fn", str(self.fn))
        if self.sign is not None:
            object.__setattr__(self, "sign", tuple(float(x) for x in self.sign))
        if self.joints not in GROUPS:
            raise ValueError(f"state_from_joints.{key}.joints must be 'arm' or 'gripper', got {self.joints!r}")
        if self.field not in FIELDS:
            raise ValueError(f"state_from_joints.{key}.field {self.field!r} unknown; allowed: {', '.join(FIELDS)}")
        if self.fn not in FNS:
            raise ValueError(f"state_from_joints.{key}.fn {self.fn!r} unknown; allowed: {', '.join(FNS)}")


@dataclasses.dataclass(frozen=True)
class Gripper:
    """A parallel gripper commanded by one finger position.

    Raises:
        ValueError: equal open and closed positions.
    """

    joints: tuple[str, ...]
    """The finger joints, as JointState names them."""
    command_topic: str
    """``std_msgs/Float64MultiArray`` topic taking one finger position (m)."""
    open: float
    """Finger position (m) for action -1."""
    closed: float
    """Finger position (m) for action +1."""

    def __post_init__(self):
        object.__setattr__(self, "joints", tuple(str(j) for j in self.joints))
        object.__setattr__(self, "command_topic", str(self.command_topic))
        object.__setattr__(self, "open", float(self.open))
        object.__setattr__(self, "closed", float(self.closed))
        if self.open == self.closed:
            raise ValueError("gripper open and closed positions must differ")

    def action_to_position(self, a: np.ndarray) -> np.ndarray:
        """Gripper action in [-1, 1] (-1 open, +1 closed) -> finger position (m), clipped to the range."""
        a = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
        return self.open + (a + 1.0) * 0.5 * (self.closed - self.open)

    def position_to_action(self, p: float) -> float:
        """Inverse of :meth:`action_to_position` (clipped to [-1, 1])."""
        span = self.closed - self.open
        return float(np.clip(2.0 * (float(p) - self.open) / span - 1.0, -1.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Robot:
    """One arm as ros2_control exposes it (the fields are the keys of ``configs/robot/<name>.yaml``).

    Mappings are accepted for ``gripper`` and the values of ``state_from_joints`` and turned into
    :class:`Gripper` / :class:`StateFromJoints`; ``limits`` is derived from ``joints``.

    Raises:
        ValueError: bad limits, an unknown field/fn/joint group, a gripper key on a robot without a
            gripper, a sign of the wrong length, or an unknown discovery range (allowed values listed).
    """

    name: str
    """The robot's name (``panda``), used in messages."""
    joints: tuple[Mapping[str, Any], ...]
    """The arm joints in command order: ``{name, lower, upper, velocity}`` (rad, rad/s)."""
    topics: dict[str, Any]
    """ROS topics: ``joint_states``, ``joint_trajectory``, ``forward_command``, ``task_state``,
    ``images: {view: topic}``."""
    gripper: Gripper | None = None
    """The gripper, or None for an arm without one."""
    state_from_joints: dict[str, StateFromJoints] = dataclasses.field(default_factory=dict)
    """Policy state key -> how it is read from JointState; other keys come from ``topics.task_state``."""
    discovery_range: str = "LOCALHOST"
    """ROS 2 DDS discovery range: LOCALHOST | SUBNET | SYSTEM_DEFAULT | OFF."""
    sim: dict[str, Any] | None = None
    """The MuJoCo stand-in: ``task``, ``joint_map`` (simulator joint -> robot joint), ``gripper_sign``."""
    limits: JointLimits = dataclasses.field(init=False, repr=False, compare=False)
    """The arm's joint limits, from ``joints``."""

    def __post_init__(self):
        def set_(name: str, value) -> None:  # frozen: the fields are normalised once, here
            object.__setattr__(self, name, value)

        set_("name", str(self.name))
        set_("joints", tuple(dict(j) for j in self.joints))
        set_("limits", JointLimits.from_config(self.joints))
        set_("topics", dict(self.topics))
        if self.gripper is not None and not isinstance(self.gripper, Gripper):
            set_("gripper", Gripper(**self.gripper) if self.gripper else None)
        sfj = {}
        for key, spec in (self.state_from_joints or {}).items():
            s = spec if isinstance(spec, StateFromJoints) else StateFromJoints(str(key), **spec)
            if s.joints == "gripper" and self.gripper is None:
                raise ValueError(f"state_from_joints.{key} reads gripper joints but the robot has no gripper")
            n = self.joint_count(s.joints)
            if s.sign is not None and len(s.sign) != n:
                raise ValueError(f"state_from_joints.{key}.sign has {len(s.sign)} entries for {n} joints")
            sfj[str(key)] = s
        set_("state_from_joints", sfj)
        rng = str(self.discovery_range).upper()
        if rng not in DISCOVERY_RANGES:
            raise ValueError(f"discovery_range {rng!r} unknown; allowed: {', '.join(DISCOVERY_RANGES)}")
        set_("discovery_range", rng)
        set_("sim", dict(self.sim) if self.sim else None)

    @property
    def arm_joints(self) -> tuple[str, ...]:
        return self.limits.names

    @property
    def all_joints(self) -> tuple[str, ...]:
        return self.limits.names + (self.gripper.joints if self.gripper else ())

    def joint_count(self, group: str) -> int:
        return len(self.arm_joints) if group == "arm" else len(self.gripper.joints if self.gripper else ())

    def image_topic(self, view: str) -> str:
        """Topic of camera ``view``; ValueError naming the configured views otherwise."""
        images = self.topics.get("images") or {}
        if view not in images:
            raise ValueError(f"robot {self.name!r} has no camera topic for view {view!r}; "
                             f"configured views: {', '.join(images) or '(none)'}")
        return str(images[view])
