"""Robot descriptions (``configs/robot/<name>.yaml``) as checked Python objects.

A robot config names the arm's joints with their limits, the optional gripper, the ROS topics of
its ros2_control controllers and cameras, how the policy's proprioceptive state keys are read
from ``sensor_msgs/JointState`` (``state_from_joints``), and, for the MuJoCo stand-in, which
simulator joints play which robot joints (``sim``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ros.safety import JointLimits

FIELDS = ("position", "velocity")
FNS = ("identity", "cos", "sin")
DISCOVERY_RANGES = ("LOCALHOST", "SUBNET", "SYSTEM_DEFAULT", "OFF")


@dataclasses.dataclass(frozen=True)
class StateFromJoints:
    """How one policy state key is read from JointState: ``joints`` (``arm`` | ``gripper``),
    ``field`` (``position`` rad | ``velocity`` rad/s), ``fn`` applied elementwise, ``sign`` per joint
    (maps the robot's convention to the one the policy was trained in)."""

    key: str
    joints: str
    field: str
    fn: str = "identity"
    sign: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Gripper:
    joints: tuple[str, ...]
    command_topic: str  # std_msgs/Float64MultiArray, one finger position (m)
    open: float  # finger position (m) for action -1
    closed: float  # finger position (m) for action +1

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
    name: str
    limits: JointLimits
    gripper: Gripper | None
    topics: dict[str, Any]
    state_from_joints: dict[str, StateFromJoints]
    discovery_range: str
    sim: dict[str, Any] | None

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


def robot_from_config(cfg: Mapping) -> Robot:
    """Build a :class:`Robot` from a robot config mapping (an OmegaConf node or a dict).

    Raises:
        ValueError: missing sections, bad limits, unknown field/fn/joint group, a sign of the wrong
            length, or an unknown discovery range (allowed values listed).
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    for key in ("name", "joints", "topics"):
        if key not in cfg:
            raise ValueError(f"robot config lacks {key!r}")
    limits = JointLimits.from_config(cfg["joints"])
    gripper = None
    if cfg.get("gripper"):
        g = cfg["gripper"]
        gripper = Gripper(tuple(g["joints"]), str(g["command_topic"]), float(g["open"]), float(g["closed"]))
        if gripper.open == gripper.closed:
            raise ValueError("gripper open and closed positions must differ")
    sfj = {}
    for key, spec in (cfg.get("state_from_joints") or {}).items():
        s = StateFromJoints(key, str(spec["joints"]), str(spec.get("field", "position")),
                            str(spec.get("fn", "identity")),
                            tuple(float(x) for x in spec["sign"]) if spec.get("sign") is not None else None)
        if s.joints not in ("arm", "gripper"):
            raise ValueError(f"state_from_joints.{key}.joints must be 'arm' or 'gripper', got {s.joints!r}")
        if s.joints == "gripper" and gripper is None:
            raise ValueError(f"state_from_joints.{key} reads gripper joints but the robot has no gripper")
        if s.field not in FIELDS:
            raise ValueError(f"state_from_joints.{key}.field {s.field!r} unknown; allowed: {', '.join(FIELDS)}")
        if s.fn not in FNS:
            raise ValueError(f"state_from_joints.{key}.fn {s.fn!r} unknown; allowed: {', '.join(FNS)}")
        n = len(limits.names) if s.joints == "arm" else len(gripper.joints)
        if s.sign is not None and len(s.sign) != n:
            raise ValueError(f"state_from_joints.{key}.sign has {len(s.sign)} entries for {n} joints")
        sfj[key] = s
    rng = str(cfg.get("discovery_range", "LOCALHOST")).upper()
    if rng not in DISCOVERY_RANGES:
        raise ValueError(f"discovery_range {rng!r} unknown; allowed: {', '.join(DISCOVERY_RANGES)}")
    return Robot(str(cfg["name"]), limits, gripper, dict(cfg["topics"]), sfj, rng, cfg.get("sim"))
