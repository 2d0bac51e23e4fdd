"""Deployment policies: one observation in, one action (or an action chunk) out, no training code.

A deployment policy is a folder with two files, written atomically (temp folder, then rename)::

    <folder>/
      policy.safetensors   the module's weights (safetensors; never pickle)
      policy.json          {"format": "dopa-policy", "version": 1, "meta": {...}, "arch": {...},
                            "module": the Python module defining the kind (imported on load if the
                            kind is not registered yet, e.g. "control.expo")}

``meta`` describes how the robot side must feed the policy (see :data:`REQUIRED_META`):

- ``kind``: the registered module kind that rebuilds the network from ``arch`` (``"mlp"`` here;
  other learners register theirs with :func:`register_kind`, a one-line decorator);
- ``task``, ``controller`` (``"joint_position"`` | ``"osc_pose"`` | ``None`` for dm_control);
- ``state_dim`` D, ``action_dim`` A, ``action_horizon`` h >= 1 (actions per call);
- ``state_layout``: ``[[key, size], ...]`` in state order (the env's ``state_layout``);
- ``views`` (camera views the policy reads, empty for state-only) and ``image_size`` (pixels);
- ``obs_normalizer``: ``{"mean": [D], "std": [D], "clip": c (optional)}`` applied as
  ``clip((state - mean) / std, -c, c)`` before the network, or ``None``;
- ``created``: ISO-8601 UTC time of the export (filled in by :func:`save_policy` when missing).

Usage (the ROS 2 policy node does exactly this)::

    policy = load_policy("runs/.../checkpoints/step_000100000/deploy")
    chunk = policy.act(state)              # float32 [D] -> float32 [h, A] in [-1, 1]

This module imports only torch, numpy, safetensors, the standard library and dopa's file helpers
(:mod:`basics.atomic`, :func:`basics.state.read_json`), so loading a policy pulls in no
learner, buffer or environment code (as Brax's ``make_policy`` and LeRobot's
``select_action``).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from basics.atomic import atomic_folder
from basics.state import check_keys, load_tensors, read_json

FORMAT = "dopa-policy"
VERSION = 1
WEIGHTS_FILE = "policy.safetensors"
CONFIG_FILE = "policy.json"
CONTROLLERS = ("joint_position", "osc_pose", None)
REQUIRED_META = ("kind", "task", "controller", "state_dim", "action_dim", "action_horizon",
                 "state_layout", "views", "image_size", "obs_normalizer")
#: The keys of policy.json (``arch`` holds exactly the kind's constructor arguments; ``meta`` the
#: :data:`REQUIRED_META` keys, ``created`` and whatever a learner's export adds).
FILE_KEYS = ("format", "version", "meta", "arch", "module")


#: Packages whose modules load_policy may import to find a kind registered outside this file.
_KIND_PACKAGES = ("control", "reward_models")


class PolicyFileError(RuntimeError):
    """A policy folder is missing, incomplete, corrupt or inconsistent (the message says which)."""


# ---------------------------------------------------------------------------------------------
# Kind registry
# ---------------------------------------------------------------------------------------------

#: kind name -> builder ``(arch: dict) -> nn.Module``. The built module maps
#: ``forward(state float32 [B, D] (already normalised), images {view: uint8 [B, H, W, 3]} | None)``
#: to ``float32 [B, h, A]`` in [-1, 1], and has ``export_config() -> arch`` (JSON-able).
KINDS: dict[str, Callable[[dict], nn.Module]] = {}


def register_kind(name: str):
    """Register a module kind for deployment: ``@register_kind("expo")`` above a class whose
    constructor takes the ``arch`` dict's entries as keyword arguments (or above any callable
    ``arch -> nn.Module`` taking keywords).

    Raises:
        ValueError: ``name`` already registered with a different builder.
    """

    def deco(builder):
        if name in KINDS and KINDS[name] is not builder:
            raise ValueError(f"policy kind {name!r} is already registered ({KINDS[name]!r})")
        KINDS[name] = builder
        return builder

    return deco


def _build(kind: str, arch: dict, where: str = "policy arch") -> nn.Module:
    """The module of ``kind`` rebuilt from ``arch``; an ``arch`` key the builder does not take is
    refused by name (``where`` names the file in the message)."""
    if kind not in KINDS:
        raise PolicyFileError(f"unknown policy kind {kind!r}; registered kinds: {', '.join(sorted(KINDS))} "
                              "(a learner's kind registers when its module is imported)")
    if not isinstance(arch, dict):
        raise PolicyFileError(f"{where}: arch must be a JSON object, got {type(arch).__name__}")
    import inspect

    try:
        params = inspect.signature(KINDS[kind]).parameters.values()
    except (TypeError, ValueError):  # a builder without a signature: nothing to check against
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
        check_keys(arch, [p.name for p in params], f"{where}: arch of kind {kind!r}", PolicyFileError)
    try:
        return KINDS[kind](**arch)
    except (TypeError, ValueError) as exc:
        raise PolicyFileError(f"{where}: arch of kind {kind!r} does not build: {exc}") from None


_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}


@register_kind("mlp")
class MLPPolicy(nn.Module):
    """Deterministic MLP policy: state -> mean action -> squash, the acting half of SAC/PPO actors.

    Layers: ``trunk`` = [Linear, (LayerNorm), activation] x len(hidden), then ``mean`` = Linear to
    ``action_dim * action_horizon``. ``squash="tanh"`` applies tanh (SAC's tanh-Gaussian mean),
    ``"clip"`` clamps to [-1, 1] (PPO's Gaussian mean). The sub-module names match
    :class:`control.networks.MLP` / the actors' ``trunk`` and ``mean`` so weights copy over by name.

    Args:
        state_dim: D.  action_dim: A.  action_horizon: h >= 1.
        hidden: hidden layer widths.  layer_norm: LayerNorm after each hidden Linear.
        activation: one of relu, elu, tanh, silu, gelu.  squash: "tanh" | "clip".
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: list[int] | tuple[int, ...] = (256, 256),
                 layer_norm: bool = True, activation: str = "relu", squash: str = "tanh",
                 action_horizon: int = 1):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
        if squash not in ("tanh", "clip"):
            raise ValueError(f"unknown squash {squash!r}; known: tanh, clip")
        self.config = dict(state_dim=int(state_dim), action_dim=int(action_dim), hidden=[int(h) for h in hidden],
                           layer_norm=bool(layer_norm), activation=activation, squash=squash,
                           action_horizon=int(action_horizon))
        layers: list[nn.Module] = []
        d = int(state_dim)
        for h in hidden:
            layers.append(nn.Linear(d, int(h)))
            if layer_norm:
                layers.append(nn.LayerNorm(int(h)))
            layers.append(_ACTIVATIONS[activation]())
            d = int(h)
        self.trunk = nn.Sequential(*layers)
        self.mean = nn.Linear(d, int(action_dim) * int(action_horizon))

    def export_config(self) -> dict:
        return dict(self.config)

    def forward(self, state: torch.Tensor, images: dict | None = None) -> torch.Tensor:
        """float32 [B, D] -> float32 [B, h, A] in [-1, 1]."""
        out = self.mean(self.trunk(state))
        out = torch.tanh(out) if self.config["squash"] == "tanh" else out.clamp(-1.0, 1.0)
        return out.view(state.shape[0], self.config["action_horizon"], self.config["action_dim"])


# ---------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------

def _check_meta(meta: dict) -> dict:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"policy meta lacks {missing}; required keys: {list(REQUIRED_META)}")
    if meta["controller"] not in CONTROLLERS:
        raise ValueError(f"meta controller {meta['controller']!r} unknown; allowed: {list(CONTROLLERS)}")
    for key in ("state_dim", "action_dim", "action_horizon"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"meta {key} must be an int >= 1, got {v!r}")
    layout_total = sum(int(n) for _, n in meta["state_layout"])
    if meta["state_layout"] and layout_total != meta["state_dim"]:
        raise ValueError(f"meta state_layout sums to {layout_total} but state_dim is {meta['state_dim']}")
    norm = meta["obs_normalizer"]
    if norm is not None:
        if not {"mean", "std"} <= set(norm) <= {"mean", "std", "clip"}:
            raise ValueError(f"obs_normalizer must have keys mean, std (and optionally clip), got {sorted(norm)}")
        for key in ("mean", "std"):
            arr = np.asarray(norm[key], dtype=np.float64)
            if arr.shape != (meta["state_dim"],):
                raise ValueError(f"obs_normalizer {key} has shape {arr.shape}, expected ({meta['state_dim']},)")
            if not np.isfinite(arr).all():
                raise ValueError(f"obs_normalizer {key} contains NaN or inf")
        if (np.asarray(norm["std"]) <= 0).any():
            raise ValueError("obs_normalizer std must be > 0")
    return meta


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x).tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def save_policy(folder, module: nn.Module, meta: dict) -> None:
    """Write a deployment policy folder atomically (temp folder beside it, then ``os.replace``).

    Args:
        folder: destination folder; replaced if it exists.
        module: a module of a registered kind (``meta["kind"]``) with ``export_config()``.
        meta: see the module docstring; ``created`` is added when missing.
    Raises:
        ValueError / TypeError: missing or bad meta keys (named), unknown kind, module without
            ``export_config``, or non-finite weights.
    """
    meta = _jsonable(dict(meta))
    meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    _check_meta(meta)
    if meta["kind"] not in KINDS:
        raise ValueError(f"unknown policy kind {meta['kind']!r}; registered: {', '.join(sorted(KINDS))}")
    if not hasattr(module, "export_config"):
        raise TypeError(f"{type(module).__name__} has no export_config(); build it from a registered kind")
    arch = _jsonable(module.export_config())
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    for k, v in tensors.items():
        if torch.is_floating_point(v) and not torch.isfinite(v).all():
            raise ValueError(f"policy weight {k!r} contains NaN or inf; refusing to export")
    with atomic_folder(folder, marker=CONFIG_FILE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump({"format": FORMAT, "version": VERSION, "meta": meta, "arch": arch,
                       "module": type(module).__module__}, f, indent=2)


class DeployPolicy:
    """A loaded deployment policy: ``act(state, images) -> float32 [h, A]`` in [-1, 1].

    Attributes:
        meta: the policy's meta dict (see module docstring).
        module: the rebuilt torch module (eval mode, CPU, no gradients).
    """

    def __init__(self, module: nn.Module, meta: dict):
        self.module = module.eval()
        self.meta = meta
        self.state_dim = int(meta["state_dim"])
        self.action_dim = int(meta["action_dim"])
        self.action_horizon = int(meta["action_horizon"])
        self.views = tuple(meta.get("views") or ())
        norm = meta.get("obs_normalizer")
        self._mean = None if norm is None else torch.tensor(norm["mean"], dtype=torch.float32)
        self._std = None if norm is None else torch.tensor(norm["std"], dtype=torch.float32)
        self._clip = None if norm is None or norm.get("clip") is None else float(norm["clip"])

    def __repr__(self) -> str:
        return (f"DeployPolicy(kind={self.meta['kind']!r}, task={self.meta['task']!r}, state_dim={self.state_dim}, "
                f"action_dim={self.action_dim}, action_horizon={self.action_horizon}, views={list(self.views)})")

    @torch.no_grad()
    def act(self, state: np.ndarray, images: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One observation -> one action chunk.

        Args:
            state: float [D] in the env's ``state_layout`` order (raw, not normalised).
            images: ``{view: uint8 [H, W, 3]}`` for every view in ``meta["views"]`` (None when the
                policy reads no views).
        Returns:
            float32 [h, A] in [-1, 1] (h = ``action_horizon``; execute row 0 first).
        Raises:
            ValueError: wrong state shape, NaN/inf in the state, a missing view or wrong image shape.
        """
        s = np.asarray(state, dtype=np.float32)
        if s.shape != (self.state_dim,):
            raise ValueError(f"state shape {s.shape} does not match the policy's ({self.state_dim},) "
                             f"(layout {self.meta.get('state_layout')})")
        if not np.isfinite(s).all():
            bad = np.flatnonzero(~np.isfinite(s)).tolist()
            raise ValueError(f"state contains NaN or inf at indices {bad}")
        x = torch.from_numpy(s)[None]
        if self._mean is not None:
            x = (x - self._mean) / self._std
            if self._clip is not None:
                x = x.clamp(-self._clip, self._clip)
        imgs = None
        if self.views:
            if images is None:
                raise ValueError(f"policy needs views {list(self.views)}; got no images")
            size = int(self.meta["image_size"])
            imgs = {}
            for v in self.views:
                if v not in images:
                    raise ValueError(f"missing view {v!r}; policy needs {list(self.views)}, got {sorted(images)}")
                im = np.asarray(images[v])
                if im.shape != (size, size, 3) or im.dtype != np.uint8:
                    raise ValueError(f"view {v!r} must be uint8 [{size}, {size}, 3], got {im.dtype} {list(im.shape)}")
                imgs[v] = torch.from_numpy(np.ascontiguousarray(im))[None]
        out = self.module(x, imgs)
        out = out.reshape(self.action_horizon, self.action_dim).float().cpu().numpy()
        if not np.isfinite(out).all():
            raise FloatingPointError("policy produced NaN or inf actions")
        return np.clip(out, -1.0, 1.0).astype(np.float32)


#: the job keys (``dopa eval``, ``dopa deploy``) that override a generative policy's sampling
SAMPLING_JOB_KEYS = ("sampler", "sample_steps")


def sampling_overrides(cfg) -> dict:
    """The sampling overrides a job config sets (its non-null ``sampler`` / ``sample_steps``), for
    :func:`load_policy`'s ``sampling``; ``{}`` when it sets none."""
    return {k: cfg.get(k) for k in SAMPLING_JOB_KEYS if cfg.get(k) is not None}


def load_policy(folder, sampling: dict | None = None) -> DeployPolicy:
    """Load a deployment policy folder written by :func:`save_policy`.

    ``sampling`` overrides how a generative policy draws its actions, without touching a weight:
    keys of its kind's ``SAMPLING_KEYS`` (EXPO: ``{"sampler": "ddim", "sample_steps": 5}``, applied
    by the module's ``set_sampling``); None or ``{}``: as exported.

    Raises:
        PolicyFileError: one line naming the file: missing folder or files, empty or corrupt JSON,
            truncated weights, unknown format or kind, an unknown key in policy.json or its
            ``arch`` (named), NaN or inf in a weight (the tensor named), or weights whose
            names/shapes do not match the architecture (both shapes named).
        ValueError: a ``sampling`` key the kind does not have (the allowed ones listed; a kind
            without sampling settings says so) or a value it refuses (named).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise PolicyFileError(f"policy folder {str(folder)!r} does not exist")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise PolicyFileError(f"policy folder {str(folder)!r} lacks {p.name} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = read_json(cfg_path, PolicyFileError, fmt=FORMAT, version=VERSION)
    check_keys(cfg, FILE_KEYS, str(cfg_path), PolicyFileError)
    meta, arch = cfg.get("meta"), cfg.get("arch")
    try:
        _check_meta(meta)
    except (ValueError, TypeError) as exc:
        raise PolicyFileError(f"{cfg_path}: {exc}") from None
    owner = cfg.get("module")
    if meta["kind"] not in KINDS and isinstance(owner, str) and owner.split(".")[0] in _KIND_PACKAGES:
        import importlib

        importlib.import_module(owner)  # the module that defines (and registers) this kind
    module = _build(meta["kind"], arch, str(cfg_path))
    weights = load_tensors(w_path, PolicyFileError, label="weights file", finite=True)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise PolicyFileError(f"{w_path} does not match kind {meta['kind']!r}: missing {missing}, unexpected {extra}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise PolicyFileError(f"{w_path}: weight {k!r} has shape {tuple(weights[k].shape)}, "
                                  f"the architecture expects {tuple(v.shape)}")
    module.load_state_dict(weights)
    for p in module.parameters():
        p.requires_grad_(False)
    if sampling:
        allowed = tuple(getattr(module, "SAMPLING_KEYS", ()))
        if not allowed:
            raise ValueError(f"policy kind {meta['kind']!r} draws no samples: sampling settings "
                             f"{sorted(sampling)} apply to generative policies (kind expo)")
        unknown = sorted(set(sampling) - set(allowed))
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {unknown} for policy kind {meta['kind']!r}; "
                             f"allowed: {', '.join(allowed)}")
        module.set_sampling(**sampling)
    return DeployPolicy(module, meta)


def policy_meta(env, kind: str, action_horizon: int = 1, views=(), obs_normalizer: dict | None = None,
                controller: str | None = None) -> dict:
    """Meta dict for a policy trained on ``env`` (a :class:`sim.vector.BatchedEnv`).

    ``controller`` defaults to the env's (robosuite) controller, ``None`` for dm_control.
    """
    if controller is None and getattr(env.spec, "family", None) == "robosuite":
        try:
            controller = env._vec.get_attr("controller")[0]
        except AttributeError:
            controller = "osc_pose"
    return {
        "kind": kind,
        "task": env.task,
        "controller": controller,
        "state_dim": int(env.state_dim),
        "action_dim": int(env.action_dim),
        "action_horizon": int(action_horizon),
        "state_layout": [[str(k), int(n)] for k, n in env.state_layout],
        "views": list(views),
        "image_size": int(env.image_size),
        "obs_normalizer": obs_normalizer,
    }
