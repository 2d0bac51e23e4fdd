"""The batched environment: Gymnasium's vector API (same-step autoreset) with torch tensors.

Batching is Gymnasium's: ``vectorization="sync"`` runs the sub-environments one after another in
this process (``gymnasium.vector.SyncVectorEnv``); ``"async"`` runs one worker process per
sub-environment (``AsyncVectorEnv``, ``spawn`` start method), which is what rendering-bound
robosuite tasks want on several cores. Both give the same results for the same seed.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from basics.checks import check_seed
from sim.limits import check_gravity, check_image_size, check_scales, check_views
from sim.tasks import TaskSpec

VECTORIZATIONS = ("sync", "async")


def _make_single(spec: TaskSpec, views, image_size, seed, env_index, kwargs):
    if spec.family == "dmc":
        # lazy: dm_control and MuJoCo load their GL backend at import; only the family asked for is imported
        from sim.dmc import DMCEnv

        return DMCEnv(spec, views=views, image_size=image_size, seed=seed, env_index=env_index, **kwargs)
    # lazy: robosuite and MuJoCo load their GL backend at import; only the family asked for is imported
    from sim.robosuite_env import RobosuiteEnv

    return RobosuiteEnv(spec, views=views, image_size=image_size, seed=seed, env_index=env_index, **kwargs)


def check_actions(action, num_envs: int, action_dim: int) -> np.ndarray:
    """Validate a batch of actions for ``num_envs`` envs of ``action_dim`` each (the CPU backends' rule).

    Args:
        action: a float torch tensor (any device; bfloat16 is widened to float32) or numpy array.
    Returns:
        numpy ``[num_envs, action_dim]``, no copy when possible.
    Raises:
        TypeError: not a torch tensor / numpy array, or not a floating dtype.
        ValueError: wrong shape, or NaN/inf entries (the message gives the first bad row).
    """
    if isinstance(action, torch.Tensor):
        if not torch.is_floating_point(action):
            raise TypeError(f"action dtype must be floating point, got {action.dtype}")
        action = action.detach().cpu()
        if action.dtype == torch.bfloat16:  # numpy has no bfloat16
            action = action.float()
        action = action.numpy()
    elif isinstance(action, np.ndarray):
        if not np.issubdtype(action.dtype, np.floating):
            raise TypeError(f"action dtype must be floating point, got {action.dtype}")
    else:
        raise TypeError(f"action must be a torch.Tensor or numpy array, got {type(action).__name__}")
    expected = (num_envs, action_dim)
    if action.shape != expected:
        raise ValueError(f"action shape {tuple(action.shape)} does not match (num_envs, action_dim) = {expected}")
    if not np.isfinite(action).all():
        row = int(np.argwhere(~np.isfinite(action).all(axis=1))[0, 0])
        raise ValueError(f"action contains NaN or inf (env {row}: {action[row].tolist()})")
    return action


class BatchedEnv:
    """``num_envs`` copies of one task behind Gymnasium vector semantics, returning torch tensors.

    ``reset(seed) -> obs, info``; ``step(action [B, A]) -> obs, reward [B], terminated [B],
    truncated [B], info``. ``obs = {"state": float32 [B, D], "images": {view: uint8 [B, H, W, 3]}}``
    (``"images"`` only when views were requested; ``"progress"``: float32 [B], the ground-truth
    progress of :class:`sim.experts.ProgressFunction`, only when built with ``progress=True``).
    A sub-environment whose episode ended is reset
    in the same call (Gymnasium's ``SAME_STEP`` autoreset): ``obs`` is then its new first
    observation and ``info["final_obs"]`` (same layout, all rows; rows of unfinished envs repeat
    ``obs``) holds the observation the step ended in. ``info["success"]`` (bool [B]) is the
    task's success after this step, for finished envs too.

    A sub-environment whose physics diverges on a step (dm_control's ``PhysicsError``, a MuJoCo
    bad-qpos/qvel/qacc warning, a NaN or inf state) raises nothing: that episode ends as truncated
    (not terminated) with reward 0 and its last finite observation as ``final_obs``, it is reset
    in the same call, ``info["diverged"]`` (bool [B], on every step) marks it, and
    ``num_diverged`` counts such steps since construction.
    """

    def __init__(self, spec: TaskSpec, num_envs: int, views: tuple[str, ...], image_size: int, seed: int,
                 vectorization: str = "sync", **kwargs):
        self.spec = spec
        self.task = spec.name
        self.num_envs = int(num_envs)
        self.views = tuple(views)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.vectorization = vectorization
        fns = [functools.partial(_make_single, spec, self.views, self.image_size, self.seed + i, i, kwargs)
               for i in range(self.num_envs)]
        if vectorization == "sync":
            # copy=False: _to_torch copies once, instead of Gymnasium's deepcopy on every step.
            self._vec = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
        else:
            self._vec = AsyncVectorEnv(fns, context="spawn", autoreset_mode=AutoresetMode.SAME_STEP)
        self.single_observation_space = self._vec.single_observation_space
        self.single_action_space = self._vec.single_action_space
        self.observation_space = self._vec.observation_space
        self.action_space = self._vec.action_space
        self.action_dim = int(self.single_action_space.shape[0])
        self.state_dim = int(self.single_observation_space["state"].shape[0])
        self.state_layout = list(self._vec.get_attr("state_layout")[0])
        self._needs_seed = True
        self.num_diverged = 0  # sub-env steps whose physics diverged (truncated and reset), since construction

    # ---------------------------------------------------------------------------------------------
    def _call(self, name, *args, **kwargs):
        return self._vec.call(name, *args, **kwargs)

    @property
    def envs(self):
        """The sub-environments (``sync`` only): ``list[sim.base.TaskEnv]``."""
        if self.vectorization != "sync":
            raise AttributeError("sub-environments live in worker processes with vectorization='async'")
        return self._vec.envs

    def _to_torch(self, obs) -> dict:
        out = {"state": torch.from_numpy(np.array(obs["state"], dtype=np.float32, copy=True))}
        if "images" in obs:
            out["images"] = {v: torch.from_numpy(np.array(x, copy=True)) for v, x in obs["images"].items()}
        if "progress" in obs:
            out["progress"] = torch.from_numpy(np.array(obs["progress"], dtype=np.float32).reshape(-1))
        return out

    def reset(self, seed: int | None = None):
        """Reset every sub-environment. Sub-env ``i`` gets seed ``seed + i`` (default: the seed
        given to ``make_env`` on the first reset, then continuing its own random stream).

        Raises:
            ValueError: a seed that is not an int with ``0 <= seed`` and ``seed + num_envs - 1 < 2**32``.
        """
        if seed is None and self._needs_seed:
            seed = self.seed
        if seed is not None:
            seed = check_seed(seed, count=self.num_envs)
        self._needs_seed = False
        obs, info = self._vec.reset(seed=seed)
        return self._to_torch(obs), {"success": torch.zeros(self.num_envs, dtype=torch.bool)}

    def check_action(self, action) -> np.ndarray:
        """Validate a batch of actions (:func:`check_actions`). Returns them as a numpy array
        ``[B, A]`` (no copy when possible); the sub-environments clip to [-1, 1]."""
        return check_actions(action, self.num_envs, self.action_dim)

    def step(self, action):
        """Step every sub-environment with ``action`` (float ``[B, A]`` in [-1, 1]; values outside are clipped).

        Returns ``obs, reward, terminated, truncated, info``; ``info["success"]`` and
        ``info["diverged"]`` are bool [B] (see the class docstring).
        """
        a = self.check_action(action)
        obs, reward, terminated, truncated, info = self._vec.step(a)
        done = np.logical_or(terminated, truncated)
        success = np.asarray(info.get("success", np.zeros(self.num_envs, bool)), dtype=bool).copy()
        diverged = np.zeros(self.num_envs, bool)
        out_info = {}
        if done.any():
            final_info = info.get("final_info", {})
            final_success = np.asarray(final_info.get("success", np.zeros(self.num_envs, bool)), dtype=bool)
            success[done] = final_success[done]
            diverged = done & np.asarray(final_info.get("diverged", diverged), dtype=bool)
            self.num_diverged += int(diverged.sum())
            final_obs = {"state": np.array(obs["state"], copy=True)}
            if "images" in obs:
                final_obs["images"] = {v: np.array(x, copy=True) for v, x in obs["images"].items()}
            if "progress" in obs:
                final_obs["progress"] = np.array(obs["progress"], copy=True)
            for i in np.flatnonzero(done):
                fo = info["final_obs"][i]
                final_obs["state"][i] = fo["state"]
                if "progress" in final_obs:
                    final_obs["progress"][i] = fo["progress"]
                for v in final_obs.get("images", {}):
                    final_obs["images"][v][i] = fo["images"][v]
            out_info["final_obs"] = self._to_torch(final_obs)
        out_info["success"] = torch.from_numpy(success)
        out_info["diverged"] = torch.from_numpy(diverged)
        return (self._to_torch(obs), torch.from_numpy(np.asarray(reward, dtype=np.float32).copy()),
                torch.from_numpy(np.asarray(terminated, dtype=bool).copy()),
                torch.from_numpy(np.asarray(truncated, dtype=bool).copy()), out_info)

    # ---------------------------------------------------------------------------------------------
    def _check_views(self, views) -> tuple[str, ...]:
        views = (views,) if isinstance(views, str) else tuple(views)
        for v in views:
            if v not in self.spec.cameras:
                raise ValueError(f"unknown view {v!r} for task {self.task!r}; known: {', '.join(self.spec.cameras)}")
        return tuple(check_views(views, self.spec.cameras))  # non-empty, no repeats

    def render(self, views=None, image_size: int | None = None) -> dict[str, torch.Tensor]:
        """Render views of the current states on demand: ``{view: uint8 [B, H, W, 3]}``, upright.

        Args:
            views: view names, each at most once (default: the views given to ``make_env``, else
                all of the task's).
            image_size: pixels per side, an int in [8, 1024] (default: the env's ``image_size``).
        Raises:
            ValueError: an unknown or repeated view (lists the task's views), an empty list, or an
                image_size that is not an int in [8, 1024].
            sim.render.RenderingError: no OpenGL backend works.
        """
        views = self._check_views(views if views is not None else (self.views or tuple(self.spec.cameras)))
        size = self.image_size if image_size is None else check_image_size(image_size)
        per_env = self._call("render_views", views, size)
        return {v: torch.from_numpy(np.stack([frames[v] for frames in per_env])) for v in views}

    def body_names(self) -> list[str]:
        """Names of the bodies that accept external forces (MuJoCo body names, world excluded)."""
        return self._call("body_names")[0][1:]

    def apply_force(self, body: str | list[str], wrench, env_ids=None) -> None:
        """Apply external wrenches on named bodies for the next step only, via ``xfrc_applied``.

        Args:
            body: a body name or a list of K names.
            wrench: float ``[B, 6]`` or ``[B, K, 6]`` (force in N, torque in N m, world frame).
                Components are clipped to the env's ``max_force`` / ``max_torque``.
            env_ids: optional indices of the envs to push (default: all).
        Raises:
            ValueError: an unknown body (lists the known ones), a wrong shape, NaN or inf.
        """
        bodies = [body] if isinstance(body, str) else list(body)
        known = set(self.body_names())
        for b in bodies:
            if b not in known:
                raise ValueError(f"unknown body {b!r} for task {self.task!r}; known: {', '.join(sorted(known))}")
        w = torch.as_tensor(wrench, dtype=torch.float64).cpu().numpy()
        if w.ndim == 2:
            w = w[:, None, :]
        if w.shape != (self.num_envs, len(bodies), 6):
            raise ValueError(f"wrench shape {tuple(w.shape)} does not match ({self.num_envs}, {len(bodies)}, 6)")
        if not np.isfinite(w).all():
            raise ValueError("wrench contains NaN or inf")
        mask = self._mask(env_ids)
        self._call("batched_set_external_force", bodies, w, mask)

    def _mask(self, env_ids) -> np.ndarray:
        mask = np.zeros(self.num_envs, bool)
        if env_ids is None:
            mask[:] = True
        else:
            ids = np.atleast_1d(np.asarray(env_ids))
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
                raise ValueError(f"env_ids {ids.tolist()} out of range [0, {self.num_envs})")
            mask[ids] = True
        return mask

    def set_scales(self, mass=None, friction=None, gain=None, env_ids=None) -> None:
        """Scale body mass (and inertia), geom friction and actuator gain relative to nominal.

        Each argument is a real number or a float ``[B]`` per env (``None``: unchanged; 1.0:
        nominal), within ``sim.limits.SCALE_RANGE`` = [0.01, 100] (outside it MuJoCo's integrator
        is unstable long before the model means anything physical).
        Raises:
            ValueError: a str, bool, NaN, inf or out-of-range scale, or a wrong length (nothing is changed).
        """
        mask = self._mask(env_ids)
        checked = check_scales(mass=mass, friction=friction, gain=gain)

        def batch(name, value):
            if value is None:
                return None
            arr = np.full(self.num_envs, value) if np.ndim(value) == 0 else np.array(value, dtype=np.float64)
            if arr.shape != (self.num_envs,):
                raise ValueError(f"{name} scale must be a float or shape ({self.num_envs},), got {arr.shape}")
            arr[~mask] = math.nan  # NaN = leave this env unchanged
            return arr

        batches = [batch(n, v) for n, v in checked.items()]
        self._call("batched_set_scales", *batches)

    def set_gravity(self, gravity, env_ids=None) -> None:
        """Set gravity (MuJoCo's ``opt.gravity``, world frame) per env until :meth:`restore_nominal`.

        Args:
            gravity: float ``[3]`` (every selected env) or ``[B, 3]`` (row ``i`` for env ``i``), m/s^2,
                finite; ``sim.gravity_tilt(degrees, axis)`` makes a tilted one.
            env_ids: optional indices of the envs to change (default: all).
        Raises:
            ValueError: a wrong shape, NaN, inf or non-number (nothing is changed).
        """
        mask = self._mask(env_ids)
        g = gravity.detach().cpu().numpy() if isinstance(gravity, torch.Tensor) else gravity
        rows = np.asarray(g, dtype=object) if not isinstance(g, np.ndarray) else g
        if np.ndim(rows) == 2 and np.shape(rows)[0] == self.num_envs:
            batch = np.stack([check_gravity(r) for r in g])
        elif np.ndim(rows) == 2:
            raise ValueError(f"gravity must be [3] or [{self.num_envs}, 3] m/s^2, got shape {np.shape(rows)}")
        else:
            batch = np.tile(check_gravity(g), (self.num_envs, 1))
        self._call("batched_set_gravity", batch, mask)

    def get_gravity(self) -> np.ndarray:
        """Gravity of every env: float64 ``[B, 3]``, m/s^2."""
        return np.stack(self._call("get_gravity"))

    def restore_nominal(self) -> None:
        """In every env: every scale back to 1.0 (the model's nominal values), gravity back to the
        model's own, and queued external forces dropped."""
        self._call("restore_nominal")

    def get_scales(self) -> list[dict[str, float]]:
        return list(self._call("get_scales"))

    def close(self) -> None:
        self._vec.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


