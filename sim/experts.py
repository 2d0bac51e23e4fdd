"""Scripted experts for the robosuite tasks, and the physical progress function of each task.

An expert drives a whole :class:`sim.vector.BatchedEnv` (``vectorization="sync"``): every step it
reads each sub-environment's MuJoCo state, runs a small phase machine per sub-environment and
returns one batch of actions ``float32 [B, A]``. Phase changes are the task's sub-task boundaries
(``sim.tasks.TaskSpec.subtasks``); the expert records the frame index at which each sub-task ended
(its *keyframes*).

Both robosuite action spaces are supported:

- ``osc_pose``: the Cartesian command is the action itself (``[dx, dy, dz]`` scaled to 0.05 m,
  rotation to 0.5 rad, in the robot base frame).
- ``joint_position``: the same Cartesian command (position and orientation error of the
  gripper site, in the world frame) is turned into joint deltas with damped least squares on the
  site Jacobian (``mujoco.mj_jacSite``): ``dq = J^T (J J^T + lambda^2 I)^-1 [dx; dw]``, then scaled
  as a whole (direction kept) so no joint exceeds the controller's 0.05 rad per step. robosuite's
  JOINT_POSITION arm (kp 50, critically damped, goal = current + delta) moves a joint at most about
  0.18 rad/s this way, so these experts are 2-4x slower than with OSC; ``dopa demos`` doubles the
  time limit for ``joint_position``.

Imperfect behaviour, chosen per episode (``imperfection``):

- ``"none"``: the expert as written.
- ``"noise"``: Gaussian noise (``noise_std``, in action units) added to every arm action.
- ``"stop"``: the expert stops (arm holds still, gripper keeps its last command) one step after a
  randomly chosen sub-task (not the last) ended.
- ``"regress"``: after the progress-making sub-task (``lift`` for the pick tasks, ``open`` for the
  door) the expert undoes it with real physics: the gripper opens and the object falls (for stack
  and pick-place-can while held over its start, so it never lands on the goal), or the door is
  pushed back shut.

Progress (:func:`progress`) is the ground truth the reward model learns from. It is computed from
the physical state only (plus references taken at reset): N sub-tasks each worth 1/N, and inside
the current sub-task a physical measure (distance to the object for reach, finger closure for
grasp, object height for lift, distance to the goal for place, handle angle for turn, hinge angle
for open). So it falls whenever progress is physically undone.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import torch

from sim.tasks import IMPERFECTIONS, get_task

EXPERT_TASKS = ("lift", "stack", "pick-place-can", "door")

_OSC_POS_SCALE = 0.05  # m per unit action (robosuite OSC_POSE output_max)
_OSC_ROT_SCALE = 0.5  # rad per unit action
_JOINT_SCALE = 0.05  # rad per unit action (robosuite JOINT_POSITION output_max)
_OPEN, _CLOSE = -1.0, 1.0


def _check_task(task: str) -> None:
    if task not in EXPERT_TASKS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for: {', '.join(EXPERT_TASKS)}")


def _rot_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector [3] (rad, world frame) rotating ``current`` onto ``target`` (3x3 matrices)."""
    r = target @ current.T
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, r.ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


# ------------------------------------------------------------------------------------------------
# Reading one robosuite sub-environment
# ------------------------------------------------------------------------------------------------
class _Scene:
    """Named physical quantities of one robosuite sub-environment (positions in m, world frame)."""

    def __init__(self, task_env):
        self.env = task_env
        self.rs = task_env.robosuite_env
        self.model, self.data = task_env.model, task_env.data
        robot = self.rs.robots[0]
        self.robot = robot
        self.gripper = robot.gripper["right"]
        self.eef_site = int(robot.eef_site_id["right"])
        self.arm_dofs = np.asarray(robot._ref_joint_vel_indexes, dtype=int)
        self.finger_qpos = np.asarray(robot._ref_gripper_joint_pos_indexes["right"], dtype=int)
        base = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, robot.robot_model.root_body)
        self.base_body = int(base)
        self.table_z = float(getattr(self.rs, "table_offset", (0, 0, 0.8))[2])

    @property
    def eef(self) -> np.ndarray:
        return self.data.site_xpos[self.eef_site].copy()

    @property
    def eef_mat(self) -> np.ndarray:
        return self.data.site_xmat[self.eef_site].reshape(3, 3).copy()

    @property
    def base_mat(self) -> np.ndarray:
        return self.data.xmat[self.base_body].reshape(3, 3).copy()

    @property
    def finger_gap(self) -> float:
        """Distance between the two finger joints' openings (m); about 0.08 fully open."""
        q = self.data.qpos[self.finger_qpos]
        return float(q[0] - q[1])

    def body_pos(self, body_id: int) -> np.ndarray:
        return self.data.xpos[body_id].copy()

    def grasping(self, obj) -> bool:
        return bool(self.rs._check_grasp(gripper=self.gripper, object_geoms=obj))

    def success(self) -> bool:
        return bool(self.rs._check_success())


# ------------------------------------------------------------------------------------------------
# Progress functions (ground truth, physical)
# ------------------------------------------------------------------------------------------------
def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear and clipped in between (``lo`` may exceed ``hi``)."""
    if hi == lo:
        return float(x >= hi)
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


_REACH_TOL = 0.02  # m: the gripper is at the object
_GAP_OPEN = 0.078  # m: Panda finger gap when open


class ProgressFunction:
    """Ground-truth step-wise progress of one sub-environment, from its physical state.

    ``reset(task_env)`` takes the references (initial gripper-object distance, resting heights);
    ``__call__()`` returns progress in [0, 1] for the current state. N sub-tasks
    (``TaskSpec.subtasks``) each weigh 1/N: progress = (k + m) / N where k sub-tasks are complete
    in the current state and m in [0, 1) measures the next one physically. Success of the task is
    exactly 1. Because k and m are read from the state, progress falls when the state regresses.
    """

    def __init__(self, task: str):
        _check_task(task)
        self.task = task
        self.n = len(get_task(task).subtasks)
        self.scene: _Scene | None = None

    # -- references ---------------------------------------------------------------------------
    def reset(self, task_env) -> None:
        s = self.scene = _Scene(task_env)
        rs = s.rs
        if self.task == "lift":
            self.obj, self.obj_body = rs.cube, rs.cube_body_id
        elif self.task == "stack":
            self.obj, self.obj_body = rs.cubeA, rs.cubeA_body_id
        elif self.task == "pick-place-can":
            name = rs.objects[rs.object_id].name
            self.obj, self.obj_body = rs.objects[rs.object_id], rs.obj_body_id[name]
        if self.task == "door":
            self.handle_site = mujoco.mj_name2id(s.model, mujoco.mjtObj.mjOBJ_SITE, rs.door.important_sites["handle"])
            self.lever_geom = s.model.geom(rs.door.naming_prefix + "handle").id
            lever_mat = self.lever_mat()
            # the grasp point: 2.5 cm in from the lever's end, fixed in the lever's frame
            grasp_world = self.handle_pos() - lever_mat[:, 0] * 0.025
            self.grasp_local = lever_mat.T @ (grasp_world - s.data.geom_xpos[self.lever_geom])
            self.reach0 = max(float(np.linalg.norm(s.eef - self.grasp_point())), 2 * _REACH_TOL)
            return
        p0 = s.body_pos(self.obj_body)
        self.obj_p0 = p0
        self.obj_z0 = float(p0[2])
        self.reach0 = max(float(np.linalg.norm(s.eef - p0)), 2 * _REACH_TOL)
        self.lift_z = s.table_z + 0.045 if self.task != "pick-place-can" else self.obj_z0 + 0.06
        self.goal = self.place_goal()
        if self.goal is not None:
            self.place0 = max(float(np.linalg.norm(self.goal - np.array([p0[0], p0[1], self.lift_z]))), 0.05)

    def handle_pos(self) -> np.ndarray:
        """Door: world position (m) of the lever's end (robosuite's ``handle`` site)."""
        return self.scene.data.site_xpos[self.handle_site].copy()

    def lever_mat(self) -> np.ndarray:
        """Door: orientation of the lever geom (3x3, world); column 0 runs along the lever."""
        return self.scene.data.geom_xmat[self.lever_geom].reshape(3, 3).copy()

    def grasp_point(self) -> np.ndarray:
        """Door: world position (m) of the point of the lever the hand holds."""
        return self.scene.data.geom_xpos[self.lever_geom] + self.lever_mat() @ self.grasp_local

    def place_goal(self) -> np.ndarray | None:
        """World position (m) the object's centre should reach to be placed (None for lift/door)."""
        s, rs = self.scene, self.scene.rs
        if self.task == "stack":
            b = s.body_pos(rs.cubeB_body_id)
            return b + np.array([0.0, 0.0, 0.045])
        if self.task == "pick-place-can":
            # The can counts as placed anywhere in its quarter of the bin; aim 5 cm inside the
            # quarter's corner nearest the robot (the far corner is at the edge of the Panda's reach).
            x_lo, y_lo = rs.bin2_pos[0], rs.bin2_pos[1]
            if rs.object_id in (0, 2):
                x_lo -= rs.bin_size[0] / 2
            if rs.object_id < 2:
                y_lo -= rs.bin_size[1] / 2
            return np.array([x_lo + 0.05, y_lo + 0.05, rs.bin2_pos[2] + 0.05])
        return None

    # -- measures ---------------------------------------------------------------------------------
    def obj_pos(self) -> np.ndarray:
        return self.scene.body_pos(self.obj_body)

    def grasp_measure(self) -> float:
        """Finger closure from open (0) to touching a 4 cm object (1)."""
        return _ramp(self.scene.finger_gap, _GAP_OPEN, 0.045)

    def __call__(self) -> float:
        s = self.scene
        if s is None:
            raise RuntimeError("ProgressFunction.reset(task_env) must be called before use")
        n = self.n
        if s.success():
            return 1.0
        if self.task == "door":
            return self._door()
        p = self.obj_pos()
        d = float(np.linalg.norm(s.eef - p))
        grasped = s.grasping(self.obj)
        lifted = p[2] >= self.lift_z
        if self.task != "lift":
            if self.task == "pick-place-can":
                placed_zone = not s.rs.not_in_bin(p, s.rs.object_id)
            else:
                placed_zone = float(np.linalg.norm(self.goal - p)) < 0.03
            carried = lifted or float(np.linalg.norm((p - self.obj_p0)[:2])) > 0.1
            if (grasped and carried) or placed_zone:
                place = _ramp(float(np.linalg.norm(self.goal - p)), self.place0, 0.0)
                return (3 + min(place, 0.99)) / n
        if grasped:
            return (2 + min(_ramp(p[2], self.obj_z0, self.lift_z), 0.99)) / n
        if d <= _REACH_TOL * 1.5:
            return (1 + min(self.grasp_measure(), 0.99)) / n
        return min(_ramp(d, self.reach0, _REACH_TOL * 1.5), 0.99) / n

    def _door(self) -> float:
        s, rs = self.scene, self.scene.rs
        hinge = float(s.data.qpos[rs.hinge_qpos_addr])  # rad, 0 closed
        lever = abs(float(s.data.qpos[rs.handle_qpos_addr])) if rs.use_latch else _DOOR_UNLATCH  # rad
        n = self.n
        if hinge > 0.02 or lever >= _DOOR_UNLATCH:  # unlatched or ajar: open sub-task, by the hinge angle
            return (3 + min(_ramp(hinge, 0.0, 0.3), 0.99)) / n
        if s.grasping([s.model.geom(self.lever_geom).name]):  # holding the lever: turn, by its angle
            return (2 + min(_ramp(lever, 0.0, _DOOR_UNLATCH), 0.99)) / n
        d = float(np.linalg.norm(s.eef - self.grasp_point()))
        if d <= _REACH_TOL * 1.5:
            return (1 + min(_ramp(s.finger_gap, _GAP_OPEN, 0.03), 0.99)) / n
        return min(_ramp(d, self.reach0, _REACH_TOL * 1.5), 0.99) / n


_DOOR_UNLATCH = 1.35  # rad of lever rotation that frees the latch


def progress(task_env, task: str | None = None) -> float:
    """Progress in [0, 1] of the current state of one sub-environment (see :class:`ProgressFunction`).

    References are taken from the current state, so call this on a fresh episode's first frame or
    keep a :class:`ProgressFunction` across the episode.
    """
    fn = ProgressFunction(task or task_env.spec_.name)
    fn.reset(task_env)
    return fn()


# ------------------------------------------------------------------------------------------------
# Per-environment phase machines
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Command:
    pos: np.ndarray  # target gripper-site position, m, world
    grip: float  # -1 open .. +1 close
    max_step: float = 0.05  # m per control step toward pos


class _PhaseMachine:
    """One episode of one sub-environment. ``command(t)`` sees frame ``t`` and says what to do."""

    def __init__(self, task: str, task_env, imperfection: str, rng: np.random.Generator):
        self.task = task
        self.spec = get_task(task)
        self.scene = _Scene(task_env)
        self.progress = ProgressFunction(task)
        self.progress.reset(task_env)
        self.imperfection = imperfection
        self.rng = rng
        self.keyframes: list[int] = []
        self.phase = 0  # internal phase index (several may belong to one sub-task)
        self.phase_steps = 0
        self.grip = _OPEN
        self.success_frame: int | None = None
        self.undo_frame: int | None = None
        self.stop_after = int(rng.integers(0, len(self.spec.subtasks) - 1)) if imperfection == "stop" else None
        self.stop_frame: int | None = None
        self.ref_mat = self.scene.eef_mat
        self.ref_mat = self._down_mat()

    def _down_mat(self, closing_axis: np.ndarray | None = None) -> np.ndarray:
        """Gripper pointing straight down with its fingers closing along ``closing_axis`` (world,
        horizontal; default: the current one). The sign nearest the current yaw is used."""
        cur = self.scene.eef_mat[:, 0].copy()  # the Panda fingers close along the site's x axis
        x = cur if closing_axis is None else np.asarray(closing_axis, dtype=float).copy()
        x[2] = 0.0
        x /= np.linalg.norm(x) + 1e-9
        if float(x @ cur) < 0.0:
            x = -x
        z = np.array([0.0, 0.0, -1.0])
        y = np.cross(z, x)
        return np.stack([x, y, z], axis=1)

    def mark(self, t: int) -> None:
        """Sub-task number len(keyframes) ended at frame t."""
        if len(self.keyframes) < len(self.spec.subtasks) and (not self.keyframes or t > self.keyframes[-1]):
            self.keyframes.append(int(t))

    def goto(self, phase: int) -> None:
        self.phase, self.phase_steps = phase, 0

    def command(self, t: int) -> _Command:
        raise NotImplementedError


class _PickPlace(_PhaseMachine):
    """Reach above the object, descend, close, lift; then (stack/can) carry, lower, release, retreat."""

    ABOVE, DESCEND, CLOSE, LIFT, CARRY, LOWER, RELEASE, RETREAT, UNDO = range(9)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.progress
        self.obj, self.obj_body = p.obj, p.obj_body
        self.carry_z = p.lift_z + (0.12 if self.task == "pick-place-can" else 0.08)
        self.grasp_depth = -0.005 if self.task == "pick-place-can" else 0.0
        self.ref_mat = self._down_mat(self._closing_axis())

    def _closing_axis(self) -> np.ndarray | None:
        """Fingers close on two opposite faces of a cube; for stack the pair of faces whose normal is
        most perpendicular to the other cube (so no finger lands on it). Cylinders: keep the yaw."""
        if self.task == "pick-place-can":
            return None
        mat = self.scene.data.xmat[self.obj_body].reshape(3, 3)
        axes = [mat[:, 0], mat[:, 1]]
        if self.task == "stack":
            rs = self.scene.rs
            ab = self.scene.body_pos(rs.cubeB_body_id) - self.scene.body_pos(self.obj_body)
            ab[2] = 0.0
            ab /= np.linalg.norm(ab) + 1e-9
            return min(axes, key=lambda a: abs(float(a @ ab)))
        cur = self.scene.eef_mat[:, 0]
        return max(axes, key=lambda a: abs(float(a @ cur)))

    def command(self, t: int) -> _Command:
        s = self.scene
        obj = s.body_pos(self.obj_body)
        eef = s.eef
        self.phase_steps += 1
        ph = self.phase
        if ph == self.ABOVE:
            if self.phase_steps == 1:
                self.ref_mat = self._down_mat(self._closing_axis())
            target = obj + np.array([0, 0, 0.08])
            self.grip = _OPEN
            aligned = np.linalg.norm(_rot_error(self.ref_mat, s.eef_mat)) < 0.1
            if np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.03 and aligned:
                self.goto(self.DESCEND)
            return _Command(target, self.grip)
        if ph == self.DESCEND:
            target = obj + np.array([0, 0, self.grasp_depth])
            if np.linalg.norm(target - eef) < 0.012 or (self.phase_steps > 40 and np.linalg.norm(target - eef) < 0.02):
                self.mark(t)  # reach
                self.goto(self.CLOSE)
            return _Command(target, _OPEN, max_step=0.03)
        if ph == self.CLOSE:
            self.grip = _CLOSE
            if self.phase_steps >= 8 and s.grasping(self.obj):
                self.mark(t)  # grasp
                self.goto(self.LIFT)
            elif self.phase_steps > 25:  # missed: open and try again
                self.grip = _OPEN
                self.goto(self.ABOVE)
            return _Command(eef if self.phase_steps > 1 else obj, self.grip)
        if not s.grasping(self.obj) and ph in (self.LIFT, self.CARRY, self.LOWER) and obj[2] < self.progress.lift_z - 0.01:
            self.grip = _OPEN  # dropped it: start over
            self.goto(self.ABOVE)
            return _Command(eef + np.array([0, 0, 0.05]), _OPEN)
        if ph == self.LIFT:
            target = np.array([obj[0], obj[1], self.carry_z])
            lifted = obj[2] >= self.progress.lift_z and s.grasping(self.obj)
            if lifted:
                self.mark(t)  # lift
                if self.task == "lift":
                    self.success_frame = t if s.success() else self.success_frame
                self.goto(self.CARRY if self.task != "lift" else self.RETREAT)
            return _Command(target, _CLOSE)
        goal = self.progress.goal
        if ph == self.CARRY:
            if self.imperfection == "regress":  # hold it up over where it was, then let go
                p0 = self.progress.obj_p0
                if self.phase_steps > 8:
                    self.undo_frame = t
                    self.goto(self.UNDO)
                return _Command(np.array([p0[0], p0[1], self.carry_z]), _CLOSE)
            target = np.array([goal[0], goal[1], self.carry_z]) + (eef - obj) * np.array([1, 1, 0])
            if np.linalg.norm((target - eef)[:2]) < 0.01:
                self.goto(self.LOWER)
            return _Command(target, _CLOSE)
        if ph == self.LOWER:
            target = goal + (eef - obj) + np.array([0, 0, 0.01])
            if np.linalg.norm(target - eef) < 0.012 or self.phase_steps > 40:
                self.goto(self.RELEASE)
            return _Command(target, _CLOSE, max_step=0.02)
        if ph == self.RELEASE:
            if self.phase_steps >= 6:
                self.goto(self.RETREAT)
            return _Command(eef, _OPEN)
        if ph == self.RETREAT:
            if self.task == "lift":
                if self.imperfection == "regress" and self.phase_steps > 6:
                    self.undo_frame = t
                    self.goto(self.UNDO)
                return _Command(np.array([obj[0], obj[1], self.carry_z]), _CLOSE)
            return _Command(eef + np.array([0, 0, 0.05]), _OPEN)
        if ph == self.UNDO:  # open the hand where it is: the object falls
            return _Command(eef, _OPEN)
        raise AssertionError(ph)

    def after_step(self, t: int) -> None:
        """Called with the new frame index after each step: the final sub-task ends at success."""
        if self.scene.success() and len(self.keyframes) == len(self.spec.subtasks) - 1:
            self.mark(t)


class _Door(_PhaseMachine):
    """Approach the lever horizontally, grasp it (fingers above and below), turn it down to free the
    latch, pull the door open along its arc; ``"regress"`` then pushes the door back shut.

    The Panda hand is wider than the 10 cm between lever and panel, so the hand points at the door
    (not down) with its fingers closing vertically around the 4 cm tall lever. While holding the
    lever the commanded hand orientation follows the lever's rotation (latch and hinge).
    """

    REACH_OUT, REACH_IN, GRAB, TURN, PULL, HOLD, UNDO = range(7)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s, rs = self.scene, self.scene.rs
        self.rs = rs
        self.lever_geom = self.progress.lever_geom
        self.latch_jnt = s.model.joint(rs.door.joints[1]).id
        self.hinge_jnt = s.model.joint(rs.door.joints[0]).id
        lever_mat = self._lever_mat()
        normal = -lever_mat[:, 1]  # the lever's y axis points into the door: outward is -y
        normal[2] = 0.0
        self.normal = normal / np.linalg.norm(normal)
        z = -self.normal  # the hand points at the door
        # fingers close vertically; of the two signs take the one nearer the current hand orientation
        options = [np.stack([x, np.cross(z, x), z], axis=1) for x in (np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, -1.0]))]
        self.ref0 = min(options, key=lambda r: float(np.linalg.norm(_rot_error(r, s.eef_mat))))
        self.lever0 = lever_mat
        self.ref_mat = self.ref0

    def _lever_mat(self) -> np.ndarray:
        return self.progress.lever_mat()

    def grasp_point(self) -> np.ndarray:
        return self.progress.grasp_point()

    def hinge(self) -> float:
        return float(self.scene.data.qpos[self.rs.hinge_qpos_addr])

    def lever(self) -> float:
        return abs(float(self.scene.data.qpos[self.rs.handle_qpos_addr]))

    def _turn_direction(self) -> np.ndarray:
        """Turn the lever down (world -z) unless following it would drive the wrist joint (joint 7,
        whose axis is the hand's) past its limit; then turn it up. The latch frees either way."""
        s = self.scene
        d, m = s.data, s.model
        a = d.xaxis[self.latch_jnt].copy()
        down = np.array([0.0, 0.0, -1.0])
        sign_down = 1.0 if float(np.cross(a, self.grasp_point() - d.xanchor[self.latch_jnt]) @ down) > 0 else -1.0
        j7 = int(m.dof_jntid[s.arm_dofs[-1]])
        q7 = float(d.qpos[m.jnt_qposadr[j7]])
        dq7 = float(a @ d.xaxis[j7]) * sign_down * _DOOR_UNLATCH * 1.15
        lo, hi = m.jnt_range[j7]
        return down if lo + 0.1 < q7 + dq7 < hi - 0.1 else -down

    def _tangent(self, jnt: int, point: np.ndarray, sign_ref: np.ndarray) -> np.ndarray:
        """Unit direction a point moves in when joint ``jnt`` turns, signed to agree with ``sign_ref``."""
        d = self.scene.data
        v = np.cross(d.xaxis[jnt], point - d.xanchor[jnt])
        v /= np.linalg.norm(v) + 1e-9
        return v if float(v @ sign_ref) >= 0 else -v

    def command(self, t: int) -> _Command:
        s = self.scene
        g = self.grasp_point()
        eef = s.eef
        self.phase_steps += 1
        ph = self.phase
        # while holding, the hand turns with the lever (latch and door hinge rotations)
        self.ref_mat = self._lever_mat() @ self.lever0.T @ self.ref0
        if ph == self.REACH_OUT:
            # stand further off while the hand still turns, so its fingers sweep clear of the lever
            rot = float(np.linalg.norm(_rot_error(self.ref_mat, s.eef_mat)))
            target = g + self.normal * (0.08 + 0.1 * min(rot, 1.0))
            if np.linalg.norm(target - eef) < 0.02 and rot < 0.15:
                self.goto(self.REACH_IN)
            return _Command(target, _OPEN)
        if ph == self.REACH_IN:
            if np.linalg.norm(g - eef) < 0.012 or (self.phase_steps > 40 and np.linalg.norm(g - eef) < 0.02):
                self.mark(t)  # reach
                self.goto(self.GRAB)
            return _Command(g, _OPEN, max_step=0.02)
        if ph == self.GRAB:
            if self.phase_steps >= 8 and s.grasping(self._lever_geoms()):
                self.mark(t)  # grasp
                self.goto(self.TURN)
            elif self.phase_steps > 25:
                self.goto(self.REACH_OUT)
                return _Command(g + self.normal * 0.08, _OPEN)
            return _Command(g, _CLOSE)
        if ph == self.TURN:
            if self.phase_steps == 1:
                self.turn_ref = self._turn_direction()
            if self.lever() >= _DOOR_UNLATCH:
                self.mark(t)  # turn
                self.goto(self.PULL)
            turn = self._tangent(self.latch_jnt, g, self.turn_ref)
            return _Command(g + turn * 0.03, _CLOSE, max_step=0.02)
        if ph == self.PULL:
            out = self._tangent(self.hinge_jnt, g, self.normal)
            turn = self._tangent(self.latch_jnt, g, self.turn_ref)
            return _Command(g + out * 0.04 + turn * 0.005, _CLOSE, max_step=0.02)
        if ph == self.HOLD:
            return _Command(g, _CLOSE)
        if ph == self.UNDO:
            back = -self._tangent(self.hinge_jnt, g, self.normal)
            turn = self._tangent(self.latch_jnt, g, self.turn_ref)  # keep the latch free
            return _Command(g + back * 0.05 + turn * 0.01, _CLOSE, max_step=0.04)
        raise AssertionError(ph)

    def _lever_geoms(self) -> list[str]:
        m = self.scene.model
        return [m.geom(self.lever_geom).name]

    def after_step(self, t: int) -> None:
        if self.phase == self.PULL and self.scene.success():
            self.mark(t)  # open
            self.success_frame = t
            if self.imperfection == "regress":
                self.undo_frame = t + 6
            self.goto(self.HOLD)
        if self.phase == self.HOLD and self.undo_frame is not None and t >= self.undo_frame:
            self.goto(self.UNDO)


# ------------------------------------------------------------------------------------------------
# The batched expert
# ------------------------------------------------------------------------------------------------
class ScriptedExpert:
    """Scripted expert for a robosuite task, acting on a whole batched env.

    Usage::

        env = sim.make_env("lift", num_envs=4, terminate_on_success=False)
        expert = ScriptedExpert(env, imperfection=["none", "noise", "stop", "regress"], seed=0)
        obs, info = env.reset(seed=0); expert.reset()
        action = expert.act()          # float32 [B, A] in [-1, 1]
        obs, r, term, trunc, info = env.step(action); expert.observe_step(term | trunc)

    Args:
        env: ``sim.vector.BatchedEnv`` of task ``lift``, ``stack``, ``pick-place-can`` or ``door``,
            with ``vectorization="sync"`` (the expert reads each sub-environment's MuJoCo state).
        imperfection: one of :data:`IMPERFECTIONS`, or a list of B of them (one per sub-env).
        seed: seeds the expert's own randomness (noise, stop point).
        noise_std: std of the Gaussian action noise of ``"noise"`` episodes, in action units.
        gain: proportional gain from position error (m) to commanded displacement.
    Raises:
        ValueError: a task without an expert, an async env, an unknown imperfection.
    """

    def __init__(self, env, imperfection="none", seed: int = 0, noise_std: float = 0.3, gain: float = 1.0):
        _check_task(env.task)
        if getattr(env, "vectorization", "sync") != "sync":
            raise ValueError("ScriptedExpert needs vectorization='sync' (it reads each sub-env's MuJoCo state)")
        self.env = env
        self.task = env.task
        self.spec = get_task(self.task)
        self.controller = env.envs[0].controller
        self.noise_std = float(noise_std)
        self.gain = float(gain)
        self.rng = np.random.default_rng(seed)
        self.set_imperfection(imperfection)
        self.machines: list[_PhaseMachine | None] = [None] * env.num_envs
        self.t = np.zeros(env.num_envs, dtype=int)

    def set_imperfection(self, imperfection) -> None:
        """Set the imperfection of the next episodes: one name or a list of B names."""
        imp = [imperfection] * self.env.num_envs if isinstance(imperfection, str) else list(imperfection)
        if len(imp) != self.env.num_envs:
            raise ValueError(f"imperfection list has {len(imp)} entries for {self.env.num_envs} envs")
        for name in imp:
            if name not in IMPERFECTIONS:
                raise ValueError(f"unknown imperfection {name!r}; known: {', '.join(IMPERFECTIONS)}")
        self.imperfection = imp

    def reset(self, env_ids=None) -> None:
        """Start new episodes (after ``env.reset`` / an autoreset) in ``env_ids`` (default: all)."""
        ids = range(self.env.num_envs) if env_ids is None else env_ids
        cls = _Door if self.task == "door" else _PickPlace
        for i in ids:
            self.machines[i] = cls(self.task, self.env.envs[i], self.imperfection[i], self.rng)
            self.t[i] = 0

    # ------------------------------------------------------------------------------------------
    def keyframes(self, i: int) -> list[int]:
        """Frame indices (strictly increasing, in [1, T]) at which env ``i``'s sub-tasks ended."""
        return list(self.machines[i].keyframes)

    def phase_name(self, i: int) -> str:
        """The sub-task env ``i`` is working on now (or ``"done"``)."""
        k = len(self.machines[i].keyframes)
        return self.spec.subtasks[k] if k < len(self.spec.subtasks) else "done"

    def progress(self, i: int) -> float:
        """Ground-truth progress in [0, 1] of env ``i``'s current state."""
        return self.machines[i].progress()

    def success_frame(self, i: int) -> int | None:
        return self.machines[i].success_frame

    def undone(self, i: int) -> int | None:
        """Frame at which env ``i`` began undoing progress (``"regress"``), else None."""
        return self.machines[i].undo_frame

    def stopped(self, i: int) -> int | None:
        """Frame at which env ``i`` stopped (``"stop"``), else None."""
        return self.machines[i].stop_frame

    # ------------------------------------------------------------------------------------------
    def act(self) -> torch.Tensor:
        """Actions for the current frames: float32 ``[B, A]`` in [-1, 1]."""
        if any(m is None for m in self.machines):
            raise RuntimeError("call ScriptedExpert.reset() after env.reset() before act()")
        out = np.zeros((self.env.num_envs, self.env.action_dim), dtype=np.float32)
        for i, m in enumerate(self.machines):
            t = int(self.t[i])
            if m.imperfection == "stop" and m.stop_frame is None and len(m.keyframes) > m.stop_after:
                if t - m.keyframes[m.stop_after] >= 1:
                    m.stop_frame = t
            if m.stop_frame is not None:
                out[i] = self._hold(m)
                continue
            cmd = m.command(t)
            m.grip = cmd.grip  # a stopped expert keeps its last gripper command
            out[i] = self._action(m, cmd)
            if m.imperfection == "noise":
                n = self.env.action_dim - 1
                out[i, :n] = np.clip(out[i, :n] + self.rng.normal(0.0, self.noise_std, n), -1.0, 1.0)
        return torch.from_numpy(out)

    def observe_step(self, done=None) -> None:
        """Advance the frame counters after ``env.step`` (and let phase machines see the new state).

        Args:
            done: optional bool ``[B]`` (``terminated | truncated`` of that step). The batched env
                autoresets finished sub-envs in the same step, so their phase machines start a new
                episode here (read ``keyframes(i)`` before this call to keep the old ones).
        """
        self.t += 1
        done = np.zeros(self.env.num_envs, bool) if done is None else np.asarray(done, dtype=bool).reshape(-1)
        if done.shape != (self.env.num_envs,):
            raise ValueError(f"done must have shape ({self.env.num_envs},), got {done.shape}")
        for i, m in enumerate(self.machines):
            if done[i]:
                self.reset([i])
                continue
            m.after_step(int(self.t[i]))
            if m.success_frame is None and m.scene.success():
                m.success_frame = int(self.t[i])

    def _hold(self, m: _PhaseMachine) -> np.ndarray:
        """A stopped expert: zero arm motion (OSC holds the pose, joint deltas of 0 hold the joints),
        the gripper keeps its last command."""
        a = np.zeros(self.env.action_dim, dtype=np.float32)
        a[-1] = m.grip
        return a

    def _action(self, m: _PhaseMachine, cmd: _Command) -> np.ndarray:
        s = m.scene
        err = cmd.pos - s.eef
        n = float(np.linalg.norm(err))
        dpos = err * self.gain
        if n * self.gain > cmd.max_step:
            dpos = err / n * cmd.max_step
        drot = _rot_error(m.ref_mat, s.eef_mat)
        a = np.zeros(self.env.action_dim, dtype=np.float32)
        if self.controller == "osc_pose":
            rb = s.base_mat.T
            a[:3] = np.clip(rb @ dpos / _OSC_POS_SCALE, -1, 1)
            a[3:6] = np.clip(rb @ drot * 1.0 / _OSC_ROT_SCALE, -1, 1)
        else:
            jacp = np.zeros((3, s.model.nv))
            jacr = np.zeros((3, s.model.nv))
            mujoco.mj_jacSite(s.model, s.data, jacp, jacr, s.eef_site)
            jac = np.vstack([jacp, jacr])[:, s.arm_dofs]
            dx = np.concatenate([dpos * 2.0, drot * 0.5])
            lam = 0.05
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam**2 * np.eye(6), dx)
            dq = dq / _JOINT_SCALE
            peak = float(np.abs(dq).max())
            a[:7] = dq / peak if peak > 1.0 else dq  # keep the direction: scale, do not clip per joint
        a[-1] = cmd.grip
        return a
