"""The one checkpoint writer and reader.

A checkpoint is a folder (LeRobot-like), written atomically: everything goes into a temporary
folder beside the destination, which is then renamed into place, so a crash never leaves a
half-written checkpoint under the final name::

    <checkpoint>/
      pretrained_model/
        model.safetensors      learner networks, keys "<network>.<parameter>" (learner.networks())
        config.json            {"config": resolved run config, "env": {"task", "state_dim",
                               "action_dim", "state_layout"}, "learner": name, "step": loop step,
                               "env_steps": env steps, "format": "dopa-checkpoint", "version": 1}
      training_state/
        learner.safetensors    every tensor of learner.state_dict(): optimizers, replay/rollout
        learner.json           buffer, normalisers, the learner's RNG; the json holds the
                               structure and the non-tensor leaves (counters, hyper-parameters)
        shaping.safetensors    the reward shaper: held potentials per env, step counter and the
        shaping.json           potential's / progress tracker's own statistics
        loop.safetensors       the loop: step, episode statistics, evaluation history, and the
        loop.json              torch / numpy / python RNG states
      deploy/                  the deployment policy (control.export.save_policy), if the learner
        policy.safetensors     can export one
        policy.json

Nested state dicts are stored as a JSON tree whose tensor leaves point into the safetensors file
(dict keys keep their int/str type, tuples stay tuples), so nothing is pickled.

Errors: :class:`CheckpointError` for a missing folder or file, corrupt JSON or weights, or an
unknown format; :func:`check_env_compatible` and :func:`load_networks` name both shapes when a
checkpoint does not fit the env or learner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from basics.atomic import atomic_folder
from basics.state import check_keys, load_tensors, read_json, read_state, rng_state, write_state
from control.export import save_policy

FORMAT = "dopa-checkpoint"
VERSION = 1
#: The keys of ``pretrained_model/config.json`` and of its ``env`` entry.
INFO_KEYS = ("format", "version", "config", "env", "learner", "step", "env_steps")
ENV_KEYS = ("task", "state_dim", "action_dim", "state_layout")


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete, corrupt or does not fit (the message says which)."""


# ---------------------------------------------------------------------------------------------
# Writer / reader
# ---------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A checkpoint read back by :func:`load_checkpoint` (training state loaded lazily)."""

    path: Path
    info: dict  # pretrained_model/config.json

    @property
    def config(self) -> dict:
        return self.info["config"]

    @property
    def env(self) -> dict:
        return self.info["env"]

    @property
    def step(self) -> int:
        return int(self.info["step"])

    def networks(self) -> dict[str, torch.Tensor]:
        """``pretrained_model/model.safetensors`` as ``{"<network>.<param>": tensor}``.

        Raises:
            CheckpointError: the file is missing, truncated or corrupt, or a tensor holds NaN or
                inf (the file and tensor named).
        """
        return load_tensors(self.path / "pretrained_model" / "model.safetensors", CheckpointError, finite=True)

    def training_state(self, name: str):
        """``training_state/<name>`` (``learner``, ``shaping`` or ``loop``) as a nested state."""
        return read_state(self.path / "training_state", name, CheckpointError)


def save_checkpoint(path, *, learner, config: dict, env_info: dict, step: int, env_steps: int,
                    loop_state: dict, shaping_state: dict | None = None, deploy=None) -> Path:
    """Write a checkpoint folder atomically (layout in the module docstring).

    Args:
        path: destination folder (replaced if it exists).
        learner: a :class:`control.learner.Learner`; ``learner.networks()`` (if present) gives the
            modules stored in ``pretrained_model``; ``learner.state_dict()`` the training state.
        config: the resolved run config (plain dict).  env_info: task, state_dim, action_dim, state_layout.
        step, env_steps: loop steps and environment steps done.
        loop_state: the loop's own state (RNG states added here).  shaping_state: the shaper's.
        deploy: ``(module, meta)`` for :func:`control.export.save_policy`, or None.
    Returns:
        The checkpoint path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_folder(path, marker="pretrained_model") as tmp:
        (tmp / "pretrained_model").mkdir()
        (tmp / "training_state").mkdir()
        nets = learner.networks() if hasattr(learner, "networks") else {}
        weights = {f"{n}.{k}": v.detach().cpu().contiguous().clone()
                   for n, m in nets.items() for k, v in m.state_dict().items()}
        save_file(weights, str(tmp / "pretrained_model" / "model.safetensors"))
        info = {"format": FORMAT, "version": VERSION, "config": config, "env": env_info,
                "learner": getattr(learner, "name", type(learner).__name__), "step": int(step),
                "env_steps": int(env_steps)}
        (tmp / "pretrained_model" / "config.json").write_text(json.dumps(info, indent=2))
        write_state(tmp / "training_state", "learner", learner.state_dict())
        write_state(tmp / "training_state", "shaping", shaping_state or {})
        write_state(tmp / "training_state", "loop", {**loop_state, "rng": rng_state()})
        if deploy is not None:
            module, meta = deploy
            save_policy(tmp / "deploy", module, meta)
    return path


def find_checkpoint(path) -> Path:
    """A checkpoint folder from a checkpoint path or a run folder (its latest checkpoint).

    Raises:
        CheckpointError: nothing there, or a run folder without checkpoints.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if (path / "pretrained_model").is_dir():
        return path
    ck = path / "checkpoints"
    cands = sorted(p for p in ck.glob("step_*") if (p / "pretrained_model").is_dir()) if ck.is_dir() else []
    if not cands:
        raise CheckpointError(f"{str(path)!r} is neither a checkpoint (no pretrained_model/) nor a run folder "
                              "with checkpoints/step_*")
    return cands[-1]


def load_checkpoint(path) -> Checkpoint:
    """Open a checkpoint (or a run folder's latest one) and read its ``config.json``.

    Raises:
        CheckpointError: missing folder or file, empty or corrupt JSON, wrong format or version,
            an unknown key in config.json or its ``env`` (named).
    """
    path = find_checkpoint(path)
    p = path / "pretrained_model" / "config.json"
    info = read_json(p, CheckpointError, label="checkpoint file", fmt=FORMAT, version=VERSION)
    check_keys(info, INFO_KEYS, str(p), CheckpointError)
    for key in ("config", "env", "step"):
        if key not in info:
            raise CheckpointError(f"{p} lacks {key!r}")
    if not isinstance(info["env"], dict):
        raise CheckpointError(f"{p}: 'env' must be a JSON object")
    check_keys(info["env"], ENV_KEYS, f"{p}: env", CheckpointError)
    return Checkpoint(path, info)


def check_env_compatible(ckpt: Checkpoint, env) -> None:
    """Raise ValueError when the checkpoint's state/action shapes differ from ``env``'s (both named)."""
    want = (int(ckpt.env["state_dim"]), int(ckpt.env["action_dim"]))
    have = (int(env.state_dim), int(env.action_dim))
    if want != have:
        raise ValueError(f"checkpoint {ckpt.path} was trained on {ckpt.env.get('task')!r} with state shape "
                         f"({want[0]},) and action shape ({want[1]},); env {env.task!r} has state shape "
                         f"({have[0]},) and action shape ({have[1]},)")


def load_networks(learner, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``pretrained_model`` weights into ``learner.networks()``, checking names and shapes.

    Raises:
        ValueError: a missing or extra tensor, or a shape mismatch (names the tensor and both shapes).
    """
    if not hasattr(learner, "networks"):
        if weights:
            raise ValueError(f"{source} holds network weights but {type(learner).__name__} has no networks()")
        return
    nets = learner.networks()
    expected = {f"{n}.{k}": v for n, m in nets.items() for k, v in m.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"{source} networks do not match the learner: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ValueError(f"{source} tensor {k!r} has shape {tuple(weights[k].shape)}, "
                             f"the learner expects {tuple(v.shape)}")
    for n, m in nets.items():
        m.load_state_dict({k[len(n) + 1:]: v for k, v in weights.items() if k.startswith(n + ".")})
