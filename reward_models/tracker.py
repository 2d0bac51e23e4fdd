"""Progress tracking with a hop model: Robo-Dopamine's multi-perspective fusion (§3.1.2-3.1.3), batched.

Three ways of querying the same hop model H(BEFORE -> AFTER), one state per environment:

- incremental (Eqs. 4-5): BEFORE = the previous frame; with Phi* the previous fused progress,
  dPhi = (1 - Phi*) H if H >= 0 else Phi* H, and Phi_I = Phi* + dPhi (stays in [0, 1], Proof A.1);
- forward-anchored (Eq. 6): Phi_F = H(s_start, s_t), BEFORE = the episode's first frame;
- backward-anchored (Eq. 7): Phi_B = 1 + H(s_goal, s_t), BEFORE = the reference goal frame in
  every view.

``fusion="mean"`` averages the three (Eq. 8). ``fusion="damped"`` is the consistency check
(Eqs. 9-11): Phi_bar = (Phi_F + Phi_B)/2, d = |Phi_B - Phi_F| / (Phi_bar + eps),
w = exp(-alpha d^2), Phi*_t = Phi*_{t-1} + (w/2)(Phi_bar - Phi*_{t-1} + dPhi). ``"incremental"``,
``"forward"`` and ``"backward"`` use one mode alone (the paper's ablations). ``fusion="precision"``
(ours, not the paper's) weighs the three by the model's own uncertainty: each hop's standard
deviation s (the spread of the GRM's hop distribution) gives a variance, Var(Phi_F) = s_F^2,
Var(Phi_B) = s_B^2, Var(Phi_I) = Var(Phi*_{t-1}) + (g s_I)^2 with g = (1 - Phi*) or Phi* (the
slope of Eqs. 4-5), and Phi*_t is their inverse-variance weighted mean, Var(Phi*_t) = 1 / sum of
the inverse variances (a scalar Kalman update; Phi* starts at 0 with variance 0). Each variance
gets ``variance_floor`` (1e-3) added: for the incremental estimate it is the process noise that
keeps the filter from trusting its own past ever more (without it Phi* lags the anchors at the
end of an episode, as a running mean would). Where the anchors are unsure (a state the model has
not seen) a confident incremental hop holds progress.
``fusion="auto"`` (the default) is ``"precision"`` for a backend that reports its hop
distribution (the GRM) and ``"mean"`` for one that answers a single score (the Qwen GRM).
Completion (the gold signal) is Phi* >= ``completion_threshold`` (0.95).

The known failure (Robo-Dopamine issue #11): when the goal looks like the start, the anchors
collapse (Phi_F ~ 0, Phi_B ~ 1, the mean tops out near 2/3). It is detected (pixel distance of the
reference start and goal below ``collapse_pixel``, or, per environment at reset, the model's own
hop from the episode's first frame to the goal below ``collapse_hop``), and then the tracker falls
back to the incremental mode alone for that environment; ``anchors_ok`` says where.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from basics.checks import check_float
from reward_models.grm import GRM, check_images, check_views, load_checkpoint
from reward_models.qwen import QwenGRMBackend
from reward_models.text import check_task_text, embed_text
from sim.episodes import read_episodes

FUSIONS = ("mean", "damped", "incremental", "forward", "backward", "precision")
FUSION_CHOICES = ("auto", *FUSIONS)  # what a config may name: the concrete ones and auto (resolve_fusion)

__all__ = ["FUSIONS", "FUSION_CHOICES", "GRMBackend", "ProgressTracker", "GRMPotential", "GRMPotentialConfig",
           "reference_from_episodes", "resolve_fusion", "check_fusion"]


def check_fusion(fusion, key: str = "fusion") -> str:
    """``fusion`` when it is one a config may name (:data:`FUSION_CHOICES`): the one check of a
    configured fusion (``reward.potential.fusion``, ``reward-eval``/``reward-adapt fusion=``,
    ``deploy reward.fusion=``).

    Raises:
        ValueError: ``"<key> must be one of auto, mean, ..., got 'max'"``.
    """
    if not isinstance(fusion, str) or fusion not in FUSION_CHOICES:
        raise ValueError(f"{key} must be one of {', '.join(FUSION_CHOICES)}, got {fusion!r}")
    return fusion


def resolve_fusion(fusion: str, has_distribution: bool) -> str:
    """The concrete fusion for ``fusion`` (one of :data:`FUSIONS` or ``"auto"``) with a backend that
    does (the GRM) or does not (the Qwen GRM's single score) report its hop distribution.

    ``"auto"`` is ``"precision"`` with a distribution, else ``"mean"`` (Eq. 8).

    Raises:
        ValueError: an unknown fusion, or ``"precision"`` without a distribution.
    """
    if fusion == "auto":
        return "precision" if has_distribution else "mean"
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(FUSION_CHOICES)}")
    if fusion == "precision" and not has_distribution:
        raise ValueError("fusion='precision' needs a backend that reports its hop uncertainty (the GRM's "
                         "distribution); this one answers a single score: use auto, mean or damped")
    return fusion


class GRMBackend:
    """The hop-backend interface of :class:`ProgressTracker`, for a :class:`reward_models.grm.GRM`.

    A backend encodes once and queries many times: ``encode_views({view: uint8 [B,H,W,3]}) -> enc``
    (row-indexable tensor), ``encode_reference(uint8 [B,H,W,3]) -> enc``, ``encode_text(str)``, and
    ``hop_encoded(text, start, goal, before, after) -> float32 [B]``. The Qwen backend
    (:mod:`reward_models.qwen`) offers the same methods.
    """

    def __init__(self, model: GRM, text_emb: dict[str, torch.Tensor] | None = None, cache_dir=None):
        self.model = model.eval()
        self.views = model.views
        self.image_size = model.config.image_size
        self.reference_view = model.config.reference_view
        self._text_emb = dict(text_emb or {})
        self._cache_dir = cache_dir
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def encode_text(self, text: str) -> torch.Tensor:
        text = check_task_text(text)
        emb = self._text_emb.get(text)
        if emb is None:
            emb = torch.from_numpy(embed_text(text, self._cache_dir))
        emb = torch.as_tensor(np.asarray(emb, dtype=np.float32))
        return self.model.encode_text(emb.view(1, -1))

    @torch.inference_mode()
    def encode_views(self, images: dict) -> torch.Tensor:
        return self.model.encode_views(images)

    @torch.inference_mode()
    def encode_reference(self, image) -> torch.Tensor:
        return self.model.encode_reference(image)

    @torch.inference_mode()
    def hop_encoded(self, text, start, goal, before, after) -> torch.Tensor:
        return self.hop_dist_encoded(text, start, goal, before, after)[0]

    @torch.inference_mode()
    def hop_dist_encoded(self, text, start, goal, before, after) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`hop_encoded`, with the hop distribution's standard deviation: (hop, std), float32 [B]."""
        b = before.shape[0]
        out = self.model.fuse(text.expand(b, -1), start.expand(b, -1), goal.expand(b, -1), before, after)
        return out.hop.float().cpu(), out.std.float().cpu()


def _rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x


class ProgressTracker:
    """Batched progress tracker: one fused progress state per environment (see the module docstring).

    Args:
        backend: a hop backend (:class:`GRMBackend` or :class:`reward_models.qwen.QwenGRMBackend`).
        task_text: the task instruction (non-empty).
        ref_start: ``{view: uint8 [H, W, 3]}`` reference start frame (the reference view is used).
        ref_goal: ``{view: uint8 [H, W, 3]}`` reference goal frame in every view of the backend.
        num_envs: B.
        fusion: one of :data:`FUSIONS`, or ``"auto"`` (:func:`resolve_fusion`: ``"precision"`` when the
            backend has ``hop_dist_encoded``, else ``"mean"``).
        damping_alpha: alpha of the consistency weight (``fusion="damped"``), 20 in the paper.
        completion_threshold: complete when progress >= this (0.95).
        collapse_pixel: mean absolute pixel difference (in [0, 1]) of the reference start and goal
            below which the goal "looks like the start".
        collapse_hop: per env, anchors are off when H(first frame -> goal) is below this.
    Raises:
        ValueError: unknown fusion, empty task text, missing reference views, bad images.
    """

    variance_floor = 1e-3  # fusion="precision": added to each variance (process noise, a std of ~0.03)

    def __init__(self, backend, task_text: str, ref_start: dict, ref_goal: dict, num_envs: int,
                 fusion: str = "auto", damping_alpha: float = 20.0, completion_threshold: float = 0.95,
                 collapse_pixel: float = 0.01, collapse_hop: float = 0.5):
        fusion = resolve_fusion(fusion, hasattr(backend, "hop_dist_encoded"))
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not 0.0 < float(completion_threshold) <= 1.0:
            raise ValueError(f"completion_threshold must be in (0, 1], got {completion_threshold}")
        self.backend = backend
        self.views = tuple(backend.views)
        self.task_text = check_task_text(task_text)
        self.fusion = fusion
        self.damping_alpha = float(damping_alpha)
        self.completion_threshold = float(completion_threshold)
        self.collapse_hop = float(collapse_hop)
        self.num_envs = int(num_envs)
        rv = backend.reference_view
        one = lambda d, name: check_views({v: torch.as_tensor(np.asarray(x))[None] for v, x in d.items()},  # noqa: E731
                                          self.views, name, backend.image_size, 1)
        if not isinstance(ref_start, dict) or rv not in ref_start:
            raise ValueError(f"ref_start must be a dict holding the reference view {rv!r}")
        start_img = check_images(torch.as_tensor(np.asarray(ref_start[rv]))[None], f"ref_start[{rv!r}]",
                                 backend.image_size, 1)
        goal = one(ref_goal, "ref_goal")
        self._text = backend.encode_text(self.task_text)
        self._start = backend.encode_reference(start_img)
        self._goal_ref = backend.encode_reference(goal[rv])
        self._goal_views = backend.encode_views(goal)
        diff = (start_img.float() - goal[rv].float()).abs().mean().item() / 255.0
        self.goal_like_start = diff < float(collapse_pixel)
        if self.goal_like_start and fusion != "incremental":
            warnings.warn(f"the reference goal looks like the reference start (mean pixel difference "
                          f"{diff:.4f} < {collapse_pixel}); anchored modes are off, tracking is incremental only",
                          stacklevel=2)
        b = self.num_envs
        self.progress = torch.zeros(b)
        self.variance = torch.zeros(b)  # of the progress (fusion="precision")
        self.anchors_ok = torch.zeros(b, dtype=torch.bool)
        self._started = torch.zeros(b, dtype=torch.bool)
        self._prev = None
        self._first = None
        self.last: dict[str, torch.Tensor] = {}

    def _images(self, obs: dict) -> dict:
        if not isinstance(obs, dict) or "images" not in obs:
            raise ValueError(f"observations must hold 'images' with views {list(self.views)}")
        return check_views(obs["images"], self.views, "obs['images']", self.backend.image_size, self.num_envs)

    def _hop(self, before, after) -> torch.Tensor:
        return self.backend.hop_encoded(self._text, self._start, self._goal_ref, before, after)

    @torch.inference_mode()
    def reset(self, env_ids, obs: dict) -> torch.Tensor:
        """Start new episodes for ``env_ids`` (int64 [K]); ``obs`` holds all B rows (only ``env_ids`` used).

        Progress of those envs is set to 0, their first frame becomes the forward anchor, and the
        goal-looks-like-start check runs for them. The other envs' state is untouched.

        Returns:
            float32 [K], the progress of those envs' first frames: 0 (the start of the incremental
            progress, Eq. 4; as :func:`reward_models.evaluate.track_episodes` reports frame 0).
        """
        ids = torch.as_tensor(env_ids, dtype=torch.long).view(-1)
        if ids.numel() == 0:
            return torch.zeros(0)
        if (ids < 0).any() or (ids >= self.num_envs).any():
            raise ValueError(f"env_ids must be in [0, {self.num_envs}), got {ids.tolist()}")
        imgs = self._images(obs)
        enc = self.backend.encode_views({v: x[ids] for v, x in imgs.items()})
        if self._prev is None:
            shape = (self.num_envs, *enc.shape[1:])
            self._prev = torch.zeros(shape, dtype=enc.dtype, device=enc.device)
            self._first = torch.zeros(shape, dtype=enc.dtype, device=enc.device)
        self._prev[ids] = enc
        self._first[ids] = enc
        self.progress[ids] = 0.0
        self.variance[ids] = 0.0
        self._started[ids] = True
        if self.goal_like_start:
            self.anchors_ok[ids] = False
        elif self.fusion in ("mean", "damped", "precision"):
            h = self._hop(enc, _rows(self._goal_views, ids.numel()))
            self.anchors_ok[ids] = h >= self.collapse_hop
        else:
            self.anchors_ok[ids] = True
        return self.progress[ids].clone()

    @torch.inference_mode()
    def __call__(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance every env by one observation.

        Returns:
            (progress float32 [B] in [0, 1], complete bool [B]). ``self.last`` holds the modes'
            values (``incremental``, ``forward``, ``backward``, ``hop``) of this step.
        Raises:
            RuntimeError: an env that was never reset.
        """
        if not self._started.all():
            raise RuntimeError(f"reset() envs {torch.nonzero(~self._started).view(-1).tolist()} first")
        imgs = self._images(obs)
        cur = self.backend.encode_views(imgs)
        b = self.num_envs
        need_inc = self.fusion in ("mean", "damped", "incremental", "precision")
        need_anchor = self.fusion != "incremental" and bool(self.anchors_ok.any())
        befores = []
        if need_inc:
            befores.append(self._prev)
        if need_anchor:
            befores += [self._first, _rows(self._goal_views, b)]
        before, after = torch.cat(befores, 0), torch.cat([cur] * len(befores), 0)
        if self.fusion == "precision":
            h, sd = self.backend.hop_dist_encoded(self._text, self._start, self._goal_ref, before, after)
        else:
            h = self._hop(before, after)
        phi = self.progress
        nan = torch.full((b,), float("nan"))
        h_inc, phi_f, phi_b = nan, nan, nan
        if need_inc:
            h_inc = h[:b]
            phi_i = torch.where(h_inc >= 0, phi + (1 - phi) * h_inc, phi + phi * h_inc).clamp(0, 1)
        else:
            phi_i = phi
        if need_anchor:
            off = b if need_inc else 0
            phi_f = h[off:off + b].clamp(0, 1)
            phi_b = (1.0 + h[off + b:off + 2 * b]).clamp(0, 1)
        if self.fusion == "incremental":
            new = phi_i
        elif self.fusion == "forward":
            new = phi_f if need_anchor else phi_i
        elif self.fusion == "backward":
            new = phi_b if need_anchor else phi_i
        elif self.fusion == "mean":
            new = torch.where(self.anchors_ok, (phi_i + phi_f + phi_b) / 3.0, phi_i) if need_anchor else phi_i
        elif self.fusion == "precision":
            floor = self.variance_floor  # added to every variance: no weight is infinite
            gain = torch.where(h_inc >= 0, 1 - phi, phi)
            var_i = self.variance + (gain * sd[:b]) ** 2 + floor
            new, var = phi_i, var_i
            if need_anchor:
                off = b
                w_i, w_f, w_b = 1 / var_i, 1 / (sd[off:off + b] ** 2 + floor), 1 / (sd[off + b:off + 2 * b] ** 2 + floor)
                fused = (w_i * phi_i + w_f * phi_f + w_b * phi_b) / (w_i + w_f + w_b)
                new = torch.where(self.anchors_ok, fused, phi_i)
                var = torch.where(self.anchors_ok, 1 / (w_i + w_f + w_b), var_i)
            self.variance = var.float()
        elif self.fusion == "damped":  # Eqs. 9-11
            if need_anchor:
                bar = (phi_f + phi_b) / 2.0
                d = (phi_b - phi_f).abs() / (bar + 1e-6)
                w = torch.exp(-self.damping_alpha * d ** 2)
                damped = phi + (w / 2.0) * (bar - phi + (phi_i - phi))
                new = torch.where(self.anchors_ok, damped, phi_i)
            else:
                new = phi_i
        else:  # set after construction
            raise ValueError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")
        new = new.clamp(0.0, 1.0)
        if torch.isnan(new).any():
            raise FloatingPointError(f"progress became NaN for envs {torch.nonzero(torch.isnan(new)).view(-1).tolist()}")
        self.progress = new.float()
        self._prev = cur
        self.last = {"incremental": phi_i, "forward": phi_f, "backward": phi_b, "hop": h_inc}
        return self.progress.clone(), self.progress >= self.completion_threshold


def reference_from_episodes(episodes, views: tuple[str, ...]) -> tuple[dict, dict]:
    """Reference start and goal frames from the first successful episode (else the first one).

    Returns:
        (start ``{view: uint8 [H, W, 3]}``, goal ``{view: uint8 [H, W, 3]}``): the episode's first
        and last frames.
    Raises:
        ValueError: no episodes, or an episode lacking one of ``views``.
    """
    if not episodes:
        raise ValueError("no episodes to take reference frames from")
    ep = next((e for e in episodes if bool(e.success)), episodes[0])
    missing = [v for v in views if v not in ep.frames]
    if missing:
        raise ValueError(f"reference episode lacks view(s) {missing}; it has {list(ep.frames)}")
    return ({v: np.asarray(ep.frames[v][0]) for v in views}, {v: np.asarray(ep.frames[v][-1]) for v in views})


def _is_qwen_checkpoint(folder) -> bool:
    f = Path(folder) / "config.json"
    if not f.is_file():
        return False
    try:
        cfg = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return str(cfg.get("model_type", "")).startswith("qwen2_5_vl")


class GRMPotential:
    """The GRM progress tracker as a shaping potential (``reward_models.potential.Potential``);
    configured and built through :class:`GRMPotentialConfig`.

    Args:
        checkpoint: GRM checkpoint folder (:func:`reward_models.grm.save_checkpoint`), or a local
            Qwen2.5-VL GRM folder (the published model, :mod:`reward_models.qwen`; needs ``reference``).
        task_text: the task instruction; default: the reference file's ``task_text``, else the
            checkpoint's only task.
        reference: an episode file (HDF5) whose first successful episode gives the reference
            start/goal frames; default: the frames stored in the checkpoint for ``task_text``.
        fusion, damping_alpha, completion_threshold: see :class:`ProgressTracker`; ``self.fusion``
            holds the fusion in use (``"auto"`` resolved).
        device: torch device for the model.
    Raises:
        ValueError: no task text can be found, no reference frames for the task, a reference file
            with other views or image size than the checkpoint.
    """

    def __init__(self, checkpoint: str, task_text: str | None = None, reference: str | None = None,
                 fusion: str = "auto", damping_alpha: float = 20.0, completion_threshold: float = 0.95,
                 device: str = "cpu"):
        qwen = _is_qwen_checkpoint(checkpoint)
        if qwen and fusion == "precision":
            raise ValueError(f"{checkpoint!r} is a Qwen2.5-VL GRM, which answers a single score: "
                             "fusion='precision' needs the hop distribution; use auto, mean or damped")
        fusion = resolve_fusion(fusion, not qwen)
        self.fusion = fusion  # resolved: never "auto"
        self.completion_threshold = float(completion_threshold)
        if qwen:
            self._init_qwen(checkpoint, task_text, reference, device)
            self.kwargs = dict(fusion=fusion, damping_alpha=damping_alpha, completion_threshold=completion_threshold)
            self.tracker = None
            return
        model, meta = load_checkpoint(checkpoint, device=device)
        self.model = model
        self.views = model.views
        refs = meta["references"]
        text_emb = {r["text"]: r["text_emb"] for r in refs.values()}
        if reference is not None:
            eps = read_episodes(reference, views=self.views, image_size=model.config.image_size)
            if task_text is None:
                task_text = eps[0].task_text
            self.ref_start, self.ref_goal = reference_from_episodes(eps, self.views)
        else:
            if task_text is None:
                if len(refs) != 1:
                    raise ValueError(f"task_text is required: checkpoint {checkpoint!r} holds tasks "
                                     f"{sorted(refs)}")
                task_text = next(iter(refs.values()))["text"]
            match = [r for r in refs.values() if r["text"] == task_text]
            if not match:
                raise ValueError(f"no reference frames for task {task_text!r} in checkpoint {checkpoint!r} "
                                 f"(it has {sorted(r['text'] for r in refs.values())}); pass reference=<episode file>")
            r = match[0]
            self.ref_start = {v: r["start"][i].numpy() for i, v in enumerate(self.views)}
            self.ref_goal = {v: r["goal"][i].numpy() for i, v in enumerate(self.views)}
        self.task_text = task_text
        self.backend = GRMBackend(model, text_emb)
        self.kwargs = dict(fusion=fusion, damping_alpha=damping_alpha, completion_threshold=completion_threshold)
        self.tracker: ProgressTracker | None = None

    def _init_qwen(self, checkpoint, task_text, reference, device) -> None:
        """The published Qwen2.5-VL GRM (:mod:`reward_models.qwen`): views, image size, task text and
        reference frames come from the ``reference`` episode file, which is then required."""
        if reference is None:
            raise ValueError(f"{checkpoint!r} is a Qwen2.5-VL GRM: pass reference=<episode file> for its "
                             f"views, image size and reference frames")
        eps = read_episodes(reference)
        if not eps:
            raise ValueError(f"no episodes in reference={reference!r}")
        self.views = tuple(eps[0].frames)
        size = int(eps[0].frames[self.views[0]].shape[1])
        self.task_text = task_text or eps[0].task_text
        self.ref_start, self.ref_goal = reference_from_episodes(eps, self.views)
        self.model = None
        self.backend = QwenGRMBackend(checkpoint, views=self.views, image_size=size, device=device)

    def _ensure(self, batch: int) -> ProgressTracker:
        if self.tracker is None or self.tracker.num_envs != batch:
            if self.tracker is not None and self.tracker._started.any():
                raise ValueError(f"batch size changed from {self.tracker.num_envs} to {batch}")
            self.tracker = ProgressTracker(self.backend, self.task_text, self.ref_start, self.ref_goal,
                                           batch, **self.kwargs)
        return self.tracker

    def reset(self, env_ids: torch.Tensor, obs: dict) -> torch.Tensor:
        """Start of a new episode for envs ``env_ids`` (int64 [K]); ``obs`` holds all B rows.

        Returns:
            float32 [K], Phi of those envs' first frames (0; :meth:`ProgressTracker.reset`), so the
            shaper never queries the tracker off its schedule.
        """
        imgs = obs.get("images") if isinstance(obs, dict) else None
        if not imgs:
            raise ValueError(f"the GRM potential needs obs['images'] with views {list(self.views)}")
        return self._ensure(next(iter(imgs.values())).shape[0]).reset(env_ids, obs)

    def __call__(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Progress float32 [B] in [0, 1] and completion bool [B] for the new observations."""
        if self.tracker is None:
            raise RuntimeError("call reset() before querying the potential")
        phi, done = self.tracker(obs)
        if not math.isfinite(float(phi.sum())):
            raise FloatingPointError("GRM potential produced a non-finite progress")
        return phi, done


@dataclasses.dataclass
class GRMPotentialConfig:
    """The GRM progress tracker as a shaping potential, as configured (``reward.potential`` of
    ``configs/reward/grm.yaml`` and ``naive.yaml``); :meth:`make` builds the :class:`GRMPotential`.

    Raises:
        ValueError: ``reward.potential.fusion must be one of auto, mean, ..., got 'max'``, or a
            completion threshold outside (0, 1].
    """

    checkpoint: str
    """GRM checkpoint folder (``dopa reward-train`` / ``reward-adapt``), or a local Qwen2.5-VL GRM folder."""
    task_text: str | None = None
    """The task instruction; default: the reference file's task text, else the checkpoint's only task."""
    reference: str | None = None
    """Episode file whose first successful episode gives the reference start/goal frames (default: the checkpoint's)."""
    fusion: str = "auto"
    """auto (precision for a GRM, mean for the Qwen GRM) | mean (Eq. 8) | damped (Eqs. 9-11) | precision | incremental | forward | backward."""
    damping_alpha: float = 20.0
    """Alpha of the consistency weight w = exp(-alpha d^2) (fusion=damped, Eq. 10); 20 in the paper."""
    completion_threshold: float = 0.95
    """Complete (the gold signal) when progress >= this, in (0, 1]."""
    device: str = "cpu"
    """Torch device of the model."""

    def __post_init__(self):
        check_fusion(self.fusion, "reward.potential.fusion")
        check_float("reward.potential.completion_threshold", self.completion_threshold, 0.0, 1.0, low_open=True)

    def make(self, task: str | None = None, num_envs: int = 1) -> GRMPotential:
        """The potential (loads the checkpoint).

        Args:
            task, num_envs: the common potential signature; the GRM potential takes its task from
                ``task_text`` / ``reference`` / the checkpoint, and sizes its tracker to the batch
                of observations at ``reset``.
        Raises:
            FileNotFoundError / ValueError: see :class:`GRMPotential`.
        """
        return GRMPotential(str(self.checkpoint), task_text=self.task_text, reference=self.reference,
                            fusion=self.fusion, damping_alpha=float(self.damping_alpha),
                            completion_threshold=float(self.completion_threshold), device=str(self.device))
