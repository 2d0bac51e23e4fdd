"""The task registry: every simulated task, its family, cameras, text and limits, in one place.

Task names are lowercase with hyphens. Named views map to each task's own cameras, so callers
ask for ``front``/``wrist``/``side``/``top`` whatever the underlying camera is called. The
natural-language task text here is the one used by the demonstrations and the reward model.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str  # "dmc" or "robosuite"
    source: tuple[str, str]  # dm_control (domain, task) or (robosuite env name, "")
    text: str  # natural-language instruction
    cameras: dict[str, str]  # view name -> MuJoCo camera name
    max_episode_steps: int  # time limit (truncation), in control steps
    success_threshold: float | None = None  # dmc: success when the step reward >= this
    subtasks: tuple[str, ...] = ()  # phase names of the scripted expert (keyframes split these)


_DMC_THRESHOLD_DOC = (
    "dm_control tasks have no success check of their own; success on a step means the task's "
    "per-step reward (in [0, 1]) is at least `success_threshold`."
)

#: arm controllers of the robosuite tasks (``sim.make_env(..., controller=...)``): end-effector
#: pose (OSC, 7-D action) or joint position deltas (8-D: 7 joints + gripper).
CONTROLLERS = ("osc_pose", "joint_position")

#: kinds of recorded demonstration (sim.experts.ScriptedExpert; an episode file's ``imperfection``):
#: clean, Gaussian action noise, stopped after a random sub-task, progress undone with real physics.
IMPERFECTIONS = ("none", "noise", "stop", "regress")

_ROBOSUITE_CAMERAS = {
    "front": "agentview",
    "wrist": "robot0_eye_in_hand",
    "side": "sideview",
    "top": "birdview",
}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        # dm_control suite (state: the suite's observation dict flattened in key order)
        TaskSpec("cartpole-swingup", "dmc", ("cartpole", "swingup"), "swing the pole up and balance it",
                 {"front": "fixed", "side": "lookatcart"}, 1000, success_threshold=0.8),
        TaskSpec("reacher-easy", "dmc", ("reacher", "easy"), "touch the target with the fingertip",
                 {"front": "fixed", "side": "hand"}, 1000, success_threshold=0.9),
        TaskSpec("cheetah-run", "dmc", ("cheetah", "run"), "run forward fast",
                 {"front": "side", "side": "back"}, 1000, success_threshold=0.8),
        TaskSpec("hopper-stand", "dmc", ("hopper", "stand"), "stand up tall on one leg",
                 {"front": "cam0", "side": "back"}, 1000, success_threshold=0.8),
        TaskSpec("walker-walk", "dmc", ("walker", "walk"), "walk forward upright",
                 {"front": "side", "side": "back"}, 1000, success_threshold=0.8),
        # robosuite, Panda arm
        TaskSpec("lift", "robosuite", ("Lift", ""), "lift the red cube",
                 dict(_ROBOSUITE_CAMERAS), 200, subtasks=("reach", "grasp", "lift")),
        TaskSpec("stack", "robosuite", ("Stack", ""), "stack the red cube on the green cube",
                 dict(_ROBOSUITE_CAMERAS), 300, subtasks=("reach", "grasp", "lift", "place")),
        TaskSpec("pick-place-can", "robosuite", ("PickPlaceCan", ""), "put the can into its bin",
                 {**_ROBOSUITE_CAMERAS, "side": "robot0_robotview"}, 400,
                 subtasks=("reach", "grasp", "lift", "place")),
        TaskSpec("door", "robosuite", ("Door", ""), "open the door",
                 dict(_ROBOSUITE_CAMERAS), 300, subtasks=("reach", "grasp", "turn", "open")),
    ]
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def check_seed(seed) -> int:
    """A seed as ``int``; the one check every backend applies.

    Raises:
        ValueError: a bool, a non-integer or a negative value (named in the message).
    """
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def task_text(name: str) -> str:
    """The natural-language instruction of task ``name`` (the one place it is defined)."""
    return get_task(name).text
