"""The one evaluation routine (used by ``dopa train``'s periodic evaluation and by ``dopa eval``).

:func:`evaluate` runs one episode per seed of a fixed list (env ``i`` of a batched env seeded with
``seed + i``), with a deterministic policy, and reports:

- success rate with its 95% Wilson score interval (``scipy.stats.binomtest(...).proportion_ci``,
  method ``"wilson"``; Wilson 1927), an episode counting as a success when the task reported
  success on any of its steps (robomimic's rollout convention);
- mean return (the task's own reward, unshaped) with its 95% Student-t interval;
- optionally a video (MP4 through imageio) of the first env from one camera view.

``dopa eval checkpoint=<dir>`` (:mod:`jobs.evaluate`) loads the checkpoint's deployment policy
(``deploy/``, what a robot runs) or, with ``policy=learner``, rebuilds the learner, and calls the
same function; the training loop calls it through :func:`evaluate_learner`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from basics.atomic import atomic_file


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's ``binomtest(...).proportion_ci``).

    Raises:
        ValueError: n < 1 or successes outside [0, n].
    """
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes} n={n}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)``; a single value gives (v, v, v)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2 or float(x.std()) == 0.0:
        return m, m, m
    half = float(student_t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


PolicyFn = Callable[[dict], torch.Tensor]


def evaluate(env, policy: PolicyFn, seed: int, max_steps: int | None = None, video_path=None,
             video_view: str | None = None, fps: int = 30, video_size: int | None = 256) -> dict:
    """Run one episode in each of ``env.num_envs`` sub-envs (seeds ``seed + i``) with ``policy``.

    Args:
        env: a :class:`sim.vector.BatchedEnv` (B = number of evaluation episodes).
        policy: ``obs dict -> float32 [B, A]`` or an action chunk ``[B, h, A]`` (executed open
            loop, row 0 first). Must be deterministic for repeatable numbers.
        seed: first seed of the fixed list ``seed, seed + 1, ..., seed + B - 1``.
        max_steps: safety bound on steps (default: the env's time limit + 1).
        video_path: write an MP4 of env 0 here (atomically), or None.
        video_view: camera view for the video (default: the task's first view).
        video_size: video frames' pixels per side (rendered apart from the observations; None:
            the env's ``image_size``).
    Returns:
        ``{"episodes", "seeds", "success_rate", "success_ci": [lo, hi], "return_mean",
        "return_ci": [lo, hi], "returns": [B], "successes": [B], "lengths": [B]}``.
    Raises:
        RuntimeError: an episode did not end within ``max_steps``.
    """
    b = env.num_envs
    obs, _ = env.reset(seed=int(seed))
    returns = torch.zeros(b, dtype=torch.float64)
    success = torch.zeros(b, dtype=torch.bool)
    lengths = torch.zeros(b, dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    if max_steps is None:
        try:
            max_steps = int(env._vec.get_attr("max_episode_steps")[0]) + 1
        except (AttributeError, IndexError):
            max_steps = int(env.spec.max_episode_steps) + 1
    limit = int(max_steps)
    frames = []
    view = video_view or next(iter(env.spec.cameras))
    steps = 0
    while not finished.all():
        chunk = policy(obs)
        chunk = chunk[:, None] if chunk.dim() == 2 else chunk
        for j in range(chunk.shape[1]):
            if video_path is not None and not finished[0]:
                frames.append(env.render((view,), image_size=video_size)[view][0].numpy())
            obs, reward, term, trunc, info = env.step(chunk[:, j])
            live = ~finished
            returns[live] += reward[live].double()
            lengths[live] += 1
            success[live] |= info["success"][live]
            finished |= term | trunc
            steps += 1
            if finished.all():
                break
            if steps >= limit:
                raise RuntimeError(f"evaluation episodes did not end within {limit} steps")
    if video_path is not None and frames:
        write_video(video_path, frames, fps)
    n_succ = int(success.sum())
    lo, hi = wilson_interval(n_succ, b)
    m, rlo, rhi = mean_interval(returns.numpy())
    return {"episodes": b, "seeds": [int(seed) + i for i in range(b)], "success_rate": n_succ / b,
            "success_ci": [lo, hi], "return_mean": m, "return_ci": [rlo, rhi],
            "returns": returns.tolist(), "successes": success.tolist(), "lengths": lengths.tolist()}


def write_video(path, frames: list[np.ndarray], fps: int = 30) -> None:
    """Write ``uint8 [H, W, 3]`` frames as an MP4 (imageio-ffmpeg), via a temp file and os.replace."""
    import imageio.v2 as imageio

    with atomic_file(Path(path), ".mp4") as tmp:
        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)


def learner_policy(learner) -> PolicyFn:
    """Deterministic batched policy from a Learner: ``obs -> learner.act(obs["state"], True)``."""
    return lambda obs: learner.act(obs["state"], deterministic=True)


def evaluate_learner(env, learner, seed: int, video_path=None, video_view: str | None = None,
                     video_size: int | None = 256) -> dict:
    """:func:`evaluate` with the learner's deterministic policy, leaving every training random
    stream as it was: the torch global RNG is forked and the learner's own ``torch.Generator``
    attributes are restored afterwards, so evaluating never changes training.

    Args and returns: as :func:`evaluate` (``policy`` = :func:`learner_policy` of ``learner``).
    """
    gens = {k: g.get_state() for k, g in vars(learner).items() if isinstance(g, torch.Generator)}
    with torch.random.fork_rng(devices=[]):
        res = evaluate(env, learner_policy(learner), int(seed), video_path=video_path, video_view=video_view,
                       video_size=video_size)
    for k, st in gens.items():
        getattr(learner, k).set_state(st)
    return res


def deploy_policy(policy) -> PolicyFn:
    """Batched policy from a :class:`control.export.DeployPolicy` (one ``act`` call per env row)."""

    def fn(obs):
        rows = []
        for i in range(obs["state"].shape[0]):
            imgs = {v: obs["images"][v][i].numpy() for v in policy.views} if policy.views else None
            rows.append(torch.from_numpy(policy.act(obs["state"][i].numpy(), imgs)))
        return torch.stack(rows)

    return fn


def format_result(r: dict) -> str:
    """One line: success rate [Wilson CI], return mean [t CI]."""
    return (f"success {r['success_rate']:.2f} [{r['success_ci'][0]:.2f}, {r['success_ci'][1]:.2f}] "
            f"return {r['return_mean']:.2f} [{r['return_ci'][0]:.2f}, {r['return_ci'][1]:.2f}] "
            f"over {r['episodes']} episodes")
