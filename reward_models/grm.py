"""The general process reward model (GRM): a small multi-view hop network, and its checkpoint folder.

Robo-Dopamine's GRM (§3.1) is a VLM that reads the task text, a reference START and END frame,
and BEFORE/AFTER frames of several cameras, and answers the relative hop H in [-1, 1]. This is
the same contract at a size that trains on two CPU cores: a CNN shared by every image (from
scratch; no offline pretrained vision weights exist), learned view and role embeddings, the task
text through the offline MiniLM encoder (:mod:`reward_models.text`), and a small transformer over

    [CLS] [text] [ref start] [ref goal] [before_v ...] [after_v ...] [after_v - before_v ...]

whose CLS token gives logits over ``hop_bins`` discretized hop values on [-1, 1]. The hop is the
distribution's mean (its spread is the model's uncertainty, kept for downstream use).

Checkpoint folder (written atomically: a temporary folder beside it, then ``os.replace``)::

    <checkpoint>/
        config.json           GRMConfig (views, image size, text dim, architecture) + training info
        model.safetensors     the weights
        references.safetensors   per-task reference start/goal frames (uint8 [V, H, W, 3]) + text embeddings
        training_state/       optimizer + step + RNG, for resuming (optional; :mod:`reward_models.training_state`)

:func:`check_grm_checkpoint` tells a GRM checkpoint folder from the other artefacts
(:func:`basics.artefacts.what_is`) before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from basics.artefacts import DEPLOY_POLICY, GRM_CHECKPOINT, MISSING, POLICY_CHECKPOINT, RUN_FOLDER, what_is
from basics.atomic import atomic_folder
from basics.state import check_keys, load_tensors, read_json
from reward_models.text import TEXT_DIM
from reward_models.training_state import has_training_state, load_training_state, write_training_state

__all__ = ["GRMConfig", "GRM", "HopOutput", "check_views", "save_checkpoint", "load_checkpoint",
           "check_grm_checkpoint"]

ROLES = ("cls", "text", "start", "goal", "before", "after", "delta")
#: The keys of a GRM checkpoint's config.json (``grm`` holds exactly :class:`GRMConfig`'s fields).
CONFIG_KEYS = ("format", "grm", "tasks", "info")


@dataclasses.dataclass
class GRMConfig:
    """Architecture and input contract of a GRM (saved as ``config.json``)."""

    views: tuple[str, ...] = ("front", "wrist")  # named camera views, in token order
    image_size: int = 64  # square images, pixels per side
    reference_view: str = ""  # view of the reference start/goal frames ("" = views[0])
    text_dim: int = TEXT_DIM  # task-text embedding width (all-MiniLM-L6-v2: 384)
    channels: tuple[int, ...] = (16, 32, 64, 64)  # CNN widths, one stride-2 conv each
    width: int = 128  # token width of the transformer
    depth: int = 2  # transformer layers
    heads: int = 4
    hop_bins: int = 41  # discretized hop values on [-1, 1] (output distribution)

    def __post_init__(self):
        self.views = tuple(self.views)
        self.channels = tuple(int(c) for c in self.channels)
        if not self.views:
            raise ValueError("a GRM needs at least one view")
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"views repeat a name: {list(self.views)}")
        if not self.reference_view:
            self.reference_view = self.views[0]
        if self.reference_view not in self.views:
            raise ValueError(f"reference_view {self.reference_view!r} is not one of the views {list(self.views)}")
        if not 16 <= int(self.image_size) <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")
        if self.hop_bins < 3:
            raise ValueError(f"hop_bins must be >= 3, got {self.hop_bins}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["views"], d["channels"] = list(self.views), list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GRMConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class HopOutput:
    """``hop`` float32 [B] in [-1, 1] (the mean), ``probs`` float32 [B, K] over ``centers`` [K],
    ``std`` float32 [B] (the distribution's standard deviation), ``logits`` [B, K]."""

    hop: torch.Tensor
    probs: torch.Tensor
    std: torch.Tensor
    logits: torch.Tensor


def check_images(x, name: str, image_size: int, batch: int | None = None) -> torch.Tensor:
    """Validate one image batch. Returns it as a uint8 tensor [B, H, W, 3].

    Raises:
        ValueError: NaN values, wrong dtype (uint8 required), wrong shape or size, or a batch size
            other than ``batch``; the message names the input and the allowed form.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a uint8 tensor [B, H, W, 3], got {type(x).__name__}")
    if x.is_floating_point() and torch.isnan(x).any():
        raise ValueError(f"{name}: images hold NaN; expected uint8 [B, {image_size}, {image_size}, 3]")
    if x.dtype != torch.uint8:
        raise ValueError(f"{name}: images must be uint8 [B, H, W, 3], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name}: images must be [B, H, W, 3], got shape {tuple(x.shape)}")
    if x.shape[1] != image_size or x.shape[2] != image_size:
        raise ValueError(f"{name}: images are {x.shape[1]}x{x.shape[2]} px but the model takes "
                         f"{image_size}x{image_size}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name}: batch of {x.shape[0]} images, expected {batch}")
    return x


def check_views(images: dict, views: tuple[str, ...], name: str, image_size: int,
                batch: int | None = None) -> dict[str, torch.Tensor]:
    """Validate a ``{view: uint8 [B, H, W, 3]}`` dict against the model's views.

    Raises:
        ValueError: a missing or extra view (names the trained views), or bad images.
    """
    if not isinstance(images, dict):
        raise ValueError(f"{name}: expected a dict {{view: uint8 [B, H, W, 3]}}, got {type(images).__name__}")
    missing = [v for v in views if v not in images]
    extra = [v for v in images if v not in views]
    if missing:
        raise ValueError(f"{name}: missing view(s) {missing}; the model was trained with views {list(views)}")
    if extra:
        raise ValueError(f"{name}: unknown view(s) {extra}; the model was trained with views {list(views)}")
    out = {}
    for v in views:
        out[v] = check_images(images[v], f"{name}[{v!r}]", image_size, batch)
        batch = out[v].shape[0]
    return out


class ImageEncoder(nn.Module):
    """uint8 [N, H, W, 3] -> float32 [N, width]: stride-2 convs, a 4x4 spatial map, a linear layer."""

    def __init__(self, channels: tuple[int, ...], width: int):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(4 if c % 4 == 0 else 1, c), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.proj = nn.Linear(c_in * 16, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        x = self.pool(self.conv(x))
        return self.proj(x.flatten(1))


class GRM(nn.Module):
    """The hop network. See the module docstring; build with ``GRM(GRMConfig(...))``."""

    def __init__(self, config: GRMConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = ImageEncoder(config.channels, w)
        self.text_proj = nn.Linear(config.text_dim, w)
        self.cls = nn.Parameter(torch.zeros(1, 1, w))
        self.role = nn.Embedding(len(ROLES), w)
        self.view = nn.Embedding(len(config.views), w)
        layer = nn.TransformerEncoderLayer(w, config.heads, 2 * w, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.fusion = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, config.hop_bins))
        self.register_buffer("centers", torch.linspace(-1.0, 1.0, config.hop_bins), persistent=False)
        self._ref_index = config.views.index(config.reference_view)
        nn.init.normal_(self.cls, std=0.02)

    @property
    def views(self) -> tuple[str, ...]:
        return self.config.views

    # ---- the three stages, exposed so a tracker can cache image encodings ----------------------
    def encode_views(self, images: dict, name: str = "images") -> torch.Tensor:
        """``{view: uint8 [B, H, W, 3]}`` (all of the model's views) -> float32 [B, V, width].

        Raises:
            ValueError: missing/extra views, wrong dtype/size, NaN (see :func:`check_views`).
        """
        imgs = check_views(images, self.views, name, self.config.image_size)
        b = next(iter(imgs.values())).shape[0]
        dev = self.cls.device
        stacked = torch.cat([imgs[v].to(dev) for v in self.views], 0)  # [V*B, H, W, 3]
        z = self.encoder(stacked)
        return z.view(len(self.views), b, -1).transpose(0, 1)

    def encode_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """float32 [B, text_dim] -> [B, width]."""
        if text_emb.ndim != 2 or text_emb.shape[1] != self.config.text_dim:
            raise ValueError(f"text embeddings must be [B, {self.config.text_dim}], got {tuple(text_emb.shape)}")
        return self.text_proj(text_emb.to(self.cls.device, torch.float32))

    def fuse(self, text: torch.Tensor, start: torch.Tensor, goal: torch.Tensor, before: torch.Tensor,
             after: torch.Tensor) -> HopOutput:
        """Encoded inputs -> hop distribution.

        Args:
            text: [B, width] (from :meth:`encode_text`).
            start, goal: [B, width] encodings of the reference start/goal frames (reference view).
            before, after: [B, V, width].
        Returns:
            :class:`HopOutput` with B rows.
        """
        b, nv, _ = before.shape
        r = self.role.weight
        vemb = self.view.weight.unsqueeze(0)  # [1, V, w]
        k = self._ref_index
        if start.ndim == 3:
            start, goal = start[:, k], goal[:, k]
        tokens = torch.cat([
            (self.cls + r[0]).expand(b, 1, -1),
            (text + r[1]).unsqueeze(1),
            (start + r[2] + vemb[0, k]).unsqueeze(1),
            (goal + r[3] + vemb[0, k]).unsqueeze(1),
            before + r[4] + vemb,
            after + r[5] + vemb,
            (after - before) + r[6] + vemb,
        ], 1)
        h = self.fusion(tokens)[:, 0]
        logits = self.head(h)
        probs = logits.softmax(-1)
        mean = probs @ self.centers
        var = (probs * (self.centers.unsqueeze(0) - mean.unsqueeze(1)) ** 2).sum(-1)
        return HopOutput(mean.clamp(-1.0, 1.0), probs, var.clamp_min(0).sqrt(), logits)

    def encode_reference(self, image, name: str = "reference") -> torch.Tensor:
        """A reference frame of the reference view, uint8 [B, H, W, 3] -> float32 [B, width]."""
        x = check_images(image, name, self.config.image_size)
        return self.encoder(x.to(self.cls.device))

    def forward(self, text_emb: torch.Tensor, ref_start, ref_goal, before: dict, after: dict) -> HopOutput:
        """The hop from BEFORE to AFTER (Robo-Dopamine's GRM query), batched.

        Args:
            text_emb: float32 [B, text_dim] task-text embeddings (:func:`reward_models.text.embed_texts`).
            ref_start, ref_goal: uint8 [B, H, W, 3], the reference start/goal frames of the
                reference view (``config.reference_view``, the front camera by default).
            before, after: ``{view: uint8 [B, H, W, 3]}`` holding every view the model was
                trained with, and no other.
        Returns:
            :class:`HopOutput`: ``hop`` float32 [B] in [-1, 1], ``probs`` [B, hop_bins], ``std`` [B].
        Raises:
            ValueError: a missing or extra view, mismatched image sizes or batch sizes, a dtype
                other than uint8, NaN images, or a text embedding of the wrong width.
        """
        zs = self.encode_reference(ref_start, "ref_start")
        zg = self.encode_reference(ref_goal, "ref_goal")
        zb = self.encode_views(before, "before")
        za = self.encode_views(after, "after")
        sizes = {zs.shape[0], zg.shape[0], zb.shape[0], za.shape[0], text_emb.shape[0]}
        if len(sizes) != 1:
            raise ValueError(f"batch sizes differ between text, references, before and after: {sorted(sizes)}")
        return self.fuse(self.encode_text(text_emb), zs, zg, zb, za)

    def loss(self, out: HopOutput, target: torch.Tensor, mse_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """Cross-entropy against the two-hot bin encoding of ``target`` [B] plus ``mse_weight`` x MSE
        of the mean. Returns ``(loss, {"ce", "mse"})``."""
        k = self.config.hop_bins
        pos = (target.clamp(-1, 1) + 1.0) / 2.0 * (k - 1)
        lo = pos.floor().long().clamp(0, k - 1)
        hi = (lo + 1).clamp(max=k - 1)
        w_hi = pos - lo.float()
        soft = torch.zeros_like(out.logits)
        soft.scatter_add_(1, lo[:, None], (1 - w_hi)[:, None])
        soft.scatter_add_(1, hi[:, None], w_hi[:, None])
        ce = -(soft * out.logits.log_softmax(-1)).sum(-1).mean()
        mse = F.mse_loss(out.hop, target)
        return ce + mse_weight * mse, {"ce": float(ce.detach()), "mse": float(mse.detach())}


# ---------------------------------------------------------------------------------------------
# Checkpoint folder
# ---------------------------------------------------------------------------------------------

def save_checkpoint(folder: str | os.PathLike, model: GRM, references: dict | None = None,
                    training_state: dict | None = None, info: dict | None = None) -> Path:
    """Write a GRM checkpoint folder atomically (temporary folder beside it, then rename).

    Layout: ``config.json`` ({"grm": GRMConfig, "info": ...}), ``model.safetensors``,
    ``references.safetensors`` (per task: ``<task>/start``, ``<task>/goal`` uint8 [V, H, W, 3] in
    the model's view order, ``<task>/text_emb`` float32 [text_dim]; the task texts live in
    config.json under ``tasks``), and ``training_state/`` (state.json + state.safetensors,
    :func:`reward_models.training_state.write_training_state`; no pickle) when given. An existing
    folder is replaced only once the new one is complete.

    Args:
        references: ``{task: {"text": str, "start": uint8 [V,H,W,3], "goal": ..., "text_emb": [D]}}``.
        training_state: a nested dict of tensors, arrays and scalars (e.g. step, optimizer state).
    Returns:
        the folder's Path.
    """
    folder = Path(folder)
    with atomic_folder(folder, marker="config.json") as tmp:
        tasks = {}
        tensors = {}
        for task, ref in (references or {}).items():
            tasks[task] = ref["text"]
            tensors[f"{task}/start"] = torch.as_tensor(np.asarray(ref["start"])).contiguous()
            tensors[f"{task}/goal"] = torch.as_tensor(np.asarray(ref["goal"])).contiguous()
            tensors[f"{task}/text_emb"] = torch.as_tensor(np.asarray(ref["text_emb"], np.float32)).contiguous()
        cfg = {"format": "dopa-grm/1", "grm": model.config.to_dict(), "tasks": tasks, "info": info or {}}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        if tensors:
            save_file(tensors, str(tmp / "references.safetensors"))
        if training_state is not None:
            (tmp / "training_state").mkdir()
            write_training_state(tmp / "training_state", training_state)
    return folder


def load_checkpoint(folder: str | os.PathLike, device: str = "cpu", views=None) -> tuple[GRM, dict]:
    """Load a GRM checkpoint folder.

    Args:
        views: optional views the caller will feed; must equal the checkpoint's views.
    Returns:
        (model in eval mode, meta) where meta holds ``config`` (the JSON), ``references``
        ({task: {"text", "start", "goal", "text_emb"}}) and ``training_state`` (dict or None, read
        by :func:`reward_models.training_state.load_training_state`: no pickle).
    Raises:
        FileNotFoundError: no such folder or a missing ``config.json`` / ``model.safetensors``.
        ValueError: one line naming the file: an empty or corrupt ``config.json``, a checkpoint
            of another format, an unknown key in it (``grm.widht``: the architecture must be read
            exactly), a truncated ``model.safetensors`` / ``references.safetensors``, NaN or inf
            in a tensor (named), weights that do not fit the architecture, views other than
            ``views``, or a corrupt training state or an old ``training_state/state.pt`` that is
            more than plain tensors.
    """
    folder = Path(folder)
    for f in ("config.json", "model.safetensors"):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"GRM checkpoint {str(folder)!r} has no {f}")
    cfg_path = folder / "config.json"
    cfg = read_json(cfg_path, ValueError, label="GRM checkpoint file")
    if not isinstance(cfg, dict) or cfg.get("format") != "dopa-grm/1":
        found = cfg.get("format") if isinstance(cfg, dict) else None
        raise ValueError(f"{folder}: not a dopa GRM checkpoint (format {found!r} in {cfg_path})")
    check_keys(cfg, CONFIG_KEYS, str(cfg_path), ValueError)
    if not isinstance(cfg.get("grm"), dict) or not isinstance(cfg.get("tasks", {}), dict):
        raise ValueError(f"{cfg_path}: 'grm' and 'tasks' must be JSON objects")
    check_keys(cfg["grm"], [f.name for f in dataclasses.fields(GRMConfig)], f"{cfg_path}: grm", ValueError)
    try:
        config = GRMConfig.from_dict(cfg["grm"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: {exc}") from None
    if views is not None and tuple(views) != config.views:
        raise ValueError(f"checkpoint {str(folder)!r} was trained with views {list(config.views)}, "
                         f"not {list(views)}")
    model = GRM(config)
    w_path = folder / "model.safetensors"
    weights = load_tensors(w_path, ValueError, label="GRM checkpoint file", finite=True)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"{w_path} does not match the architecture in {cfg_path}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ValueError(f"{w_path}: tensor {k!r} has shape {tuple(weights[k].shape)}, the architecture in "
                             f"{cfg_path} expects {tuple(v.shape)}")
    model.load_state_dict(weights)
    model.to(device).eval()
    refs = {}
    r_path = folder / "references.safetensors"
    if r_path.is_file() or cfg.get("tasks"):
        t = load_tensors(r_path, ValueError, label="GRM checkpoint file", finite=True)
        for task, text in cfg.get("tasks", {}).items():
            keys = [f"{task}/start", f"{task}/goal", f"{task}/text_emb"]
            if any(k not in t for k in keys):
                raise ValueError(f"{r_path} lacks {[k for k in keys if k not in t]} for task {task!r} named in {cfg_path}")
            refs[task] = {"text": text, "start": t[keys[0]], "goal": t[keys[1]], "text_emb": t[keys[2]]}
    ts = load_training_state(folder) if has_training_state(folder) else None
    return model, {"config": cfg, "references": refs, "training_state": ts}


def check_grm_checkpoint(path, key: str = "checkpoint") -> Path:
    """``path`` as a GRM checkpoint folder (``config.json`` + ``model.safetensors``), checked with
    :func:`basics.artefacts.what_is` before anything is loaded.

    Args:
        path: the folder.  key: the config key named in the messages (``reward.checkpoint``).
    Returns:
        ``path`` as a Path.
    Raises:
        FileNotFoundError: nothing at ``path``, or something other than a GRM checkpoint; the
            message says when it is a policy checkpoint, run or deployment policy instead
            (``dopa eval`` / ``dopa deploy`` take those).
    """
    p = Path(str(path))
    kind = what_is(p)
    if kind == GRM_CHECKPOINT:
        return p
    if kind == MISSING:
        raise FileNotFoundError(f"{key}={str(path)!r} does not exist (a GRM checkpoint folder from "
                                "dopa reward-train or reward-adapt)")
    if kind in (POLICY_CHECKPOINT, RUN_FOLDER, DEPLOY_POLICY):
        raise FileNotFoundError(f"{key}={str(path)!r} is a policy checkpoint or run, not a GRM checkpoint "
                                "(config.json + model.safetensors, from dopa reward-train)")
    raise FileNotFoundError(f"{key}={str(path)!r} is not a GRM checkpoint: it needs config.json and "
                            "model.safetensors (from dopa reward-train or reward-adapt)")
