"""The one training loop: ``train(env, learner, shaper, run_dir, schedule, ...)`` on built objects.

Every learner (SAC, PPO, GoRL, EXPO, ...) and every benchmark that trains runs here. The loop
takes the pieces built (``dopa train``, :mod:`jobs.train`, builds them from its config) as Brax's
``train(environment, ..., progress_fn)`` does:

- ``env``: a :class:`sim.vector.BatchedEnv` (B = ``env.num_envs``). When the shaper's potential
  reads camera views and ``query_every = 1`` the env must return them with every observation
  (build it with ``views=`` :func:`step_views`); otherwise ``env.render(views)`` runs on query
  steps and when an episode ends, and the shaper holds Phi in between. When the potential reads
  the simulator's ground-truth progress (``shaper.needs_progress``, the oracle potential) the env
  must report ``obs["progress"]`` (build it with ``progress=True``);
- ``learner``: a :class:`control.learner.Learner`;
- ``shaper``: the reward shaper (``reward_models.shaping.RewardShaper``; used through ``views``,
  ``uses_potential``, ``query_every``, ``query_due()``, ``start``, ``resume``, ``step``,
  ``state_dict``, ``load_state_dict``);
- ``schedule``: :class:`Schedule` (length, cadences, seeds);
- ``eval_env``: the evaluation env (``schedule.eval_seed + i`` for env i), or a function that
  builds it at the first evaluation;
- ``callbacks``: :class:`control.callbacks.Callback` objects (TensorBoard, checkpoints, ...);
- ``start``: :class:`Start`, the state of a run continued from a checkpoint.

Per step: ``act -> env.step -> shaping -> observe -> update``. Reported to the callbacks every
``log_every`` env steps: each reward term as its own scalar (``reward/task``, ``reward/shaping``,
``reward/gold``, ``reward/progress``, ``reward/total``), the learner's metrics (``learner/*``, the
latest value of each key, so a rare one such as GoRL's refit fidelity is logged after its event),
the recent episodes' return and success and the throughput (``train/*``); periodic evaluation
(:func:`control.evaluate.evaluate_learner`: success rate with its Wilson interval, return with
its t interval) is appended to ``<run_dir>/eval.jsonl`` (videos in ``<run_dir>/videos``).
With ``schedule.eval_at_start`` a new run is also evaluated before its first env step (env step
0), after the learner's offline pre-training (EXPO's behaviour cloning), by the same routine on the
same seeds: the figure before online learning, which the loop returns as ``first_eval`` beside the
last evaluation (``last_eval``), so a run shows what online learning added.

Checkpoints and exact resume: every ``checkpoint_every`` env steps (and at the end) the loop cuts
all episodes (a running episode counts as *truncated*, so learners bootstrap through the cut),
resets every env with a seed derived from (``seed``, step) (:func:`episode_seed`) and calls the
callbacks' ``on_checkpoint`` (:class:`control.callbacks.Checkpoints` writes one). A run given
``start=Start.from_checkpoint(ckpt)`` restores the weights, the learner's, shaper's and loop's
state (RNG included) and resets the envs with the same derived seed, so on CPU the run continues
bit for bit: the weights after N steps equal those of an uninterrupted run with the same seed.

What the loop uses from a learner, beyond the :class:`control.learner.Learner` contract (all
optional): ``networks() -> {name: nn.Module}`` (weights restored from ``Start.networks``);
``torch.Generator`` attributes (their states are restored after each evaluation so evaluating
never changes training); ``extra_env_steps()`` (reported with the loop's own count);
``pretrain()`` (no arguments: offline pre-training that would otherwise run at the first ``act``,
such as EXPO's behaviour cloning; called once before the evaluation at the start, so that
evaluation sees the pre-trained policy and pre-training consumes the random streams exactly as it
would at the first step; its metrics are logged with the first report).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from basics.checks import check_int, check_seed
from basics.state import set_rng_state
from control.callbacks import ProgressBar, Run
from control.checkpoint import Checkpoint, load_networks
from control.evaluate import evaluate_learner
from control.learner import Transition


@dataclass
class Schedule:
    """How long the loop runs and when it logs, checkpoints and evaluates (env steps are counted
    over all envs together; each cadence becomes ``max(1, every // num_envs)`` loop steps)."""

    total_steps: int
    """Environment steps to train for (the loop runs ``ceil(total_steps / num_envs)`` steps)."""
    checkpoint_every: int
    """Env steps between checkpoint boundaries (every boundary cuts all episodes and reseeds)."""
    eval_every: int = 0
    """Env steps between evaluations (0: never)."""
    eval_seed: int = 1_000_000
    """First seed of the evaluation episodes (episode i uses ``eval_seed + i``)."""
    eval_video: bool = False
    """Record an MP4 of the first evaluation episode into ``<run_dir>/videos/``."""
    video_view: str | None = None
    """Camera view of the videos (None: the task's first view)."""
    video_size: int | None = 256
    """Video frames' pixels per side (None: the env's image_size)."""
    eval_at_start: bool = False
    """Also evaluate a new run before its first env step (env step 0, after ``learner.pretrain()``),
    when ``eval_every > 0``: the policy before online learning (not repeated on resume)."""
    log_every: int = 1000
    """Env steps between reports to the callbacks' ``on_log``."""
    checkpoint_keep: int = 0
    """Keep only the newest k checkpoints (0: keep all; used by :class:`control.callbacks.Checkpoints`)."""
    seed: int = 0
    """Seed of the episode resets (:func:`episode_seed`)."""
    progress: bool = True
    """Show a tqdm progress bar (:class:`control.callbacks.ProgressBar`)."""

    def __post_init__(self):
        self.total_steps = check_int("total_steps", self.total_steps, 1)
        self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, 1)
        self.eval_every = check_int("eval.every", self.eval_every or 0, 0)
        self.eval_seed = check_seed(check_int("eval.seed", self.eval_seed, 0), key="eval.seed")
        self.log_every = check_int("log_every", self.log_every, 0)
        self.checkpoint_keep = check_int("checkpoint_keep", self.checkpoint_keep or 0, 0)
        self.seed = check_seed(check_int("seed", self.seed, 0), key="seed")

    def loop_steps(self, num_envs: int) -> int:
        """Loop steps of the whole run for ``num_envs`` envs."""
        return math.ceil(self.total_steps / int(num_envs))

    @staticmethod
    def every(env_steps: int, num_envs: int) -> int:
        """A cadence in env steps as loop steps (at least 1)."""
        return max(1, int(env_steps) // int(num_envs))


@dataclass
class Start:
    """Where a continued run starts: the loop state and what the learner and shaper restore.

    Attributes:
        step: loop steps already done.  history: the evaluations so far.
        rng: torch / numpy / python RNG states (:func:`basics.state.rng_state`), or None.
        networks: ``{"<network>.<param>": tensor}`` for :func:`control.checkpoint.load_networks`.
        learner: ``learner.state_dict()``.  shaping: ``shaper.state_dict()``.
        source: where it came from (named in shape-mismatch errors).
    """

    step: int = 0
    history: list = field(default_factory=list)
    rng: dict | None = None
    networks: dict | None = None
    learner: dict | None = None
    shaping: dict | None = None
    source: str = "checkpoint"

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> Start:
        """The state of a checkpoint (:func:`control.checkpoint.load_checkpoint`).

        Raises:
            control.checkpoint.CheckpointError: a missing or corrupt file (named).
        """
        networks, learner = ckpt.networks(), ckpt.training_state("learner")
        shaping, loop = ckpt.training_state("shaping"), ckpt.training_state("loop")
        return cls(step=int(loop["step"]), history=list(loop.get("history", [])), rng=loop["rng"],
                   networks=networks, learner=learner, shaping=shaping, source=str(ckpt.path))

    def restore(self, learner, shaper) -> None:
        """Load the weights and states into ``learner`` and ``shaper``, then the RNG states.

        Raises:
            ValueError: weights that do not fit the learner's networks (names and shapes named).
        """
        load_networks(learner, self.networks or {}, self.source)
        if self.learner is not None:
            learner.load_state_dict(self.learner)
        if self.shaping is not None:
            shaper.load_state_dict(self.shaping)
        if self.rng is not None:
            set_rng_state(self.rng)


def episode_seed(seed: int, step: int) -> int:
    """Seed for resetting all envs at loop step ``step`` (checkpoint boundaries), in [0, 2**31):
    ``(seed * 1_000_003 + step + 1) mod 2**31``, so ``episode_seed + i`` stays a valid 32-bit seed
    for every sub-env ``i`` whatever the run's seed."""
    return (int(seed) * 1_000_003 + int(step) + 1) % 2**31


def step_views(shaper) -> tuple[str, ...]:
    """The views the training env must render with every observation for ``shaper``: the
    potential's views when it is queried every step, else none (rendered on demand)."""
    views = tuple(shaper.views) if shaper.uses_potential else ()
    return views if views and shaper.query_every == 1 else ()


class _Stats:
    """The loop's running statistics: reward terms, recent episodes, learner metrics, throughput."""

    def __init__(self, num_envs: int, step: int):
        self.ep_return = torch.zeros(num_envs, dtype=torch.float64)
        self.ep_shaped = torch.zeros(num_envs, dtype=torch.float64)
        self.ep_success = torch.zeros(num_envs, dtype=torch.bool)
        self.recent: list[tuple[float, float, bool]] = []
        self.term_sums: dict[str, torch.Tensor] = {}
        self.term_count = 0
        self.metrics: dict[str, float] = {}
        self.t0, self.step0 = time.time(), step

    def add(self, reward_env, reward, terms: dict, done, success, metrics) -> None:
        if metrics:  # latest value per key until the next report: a metric of a rare event (a GoRL
            self.metrics.update(metrics)  # refit) outlives the updates after it, but is logged once
        for k, v in terms.items():  # summed as tensors: no host sync per term and step (floats at log time)
            m = v.detach().mean(dtype=torch.float64)
            self.term_sums[k] = self.term_sums[k] + m if k in self.term_sums else m
        self.term_count += 1
        if self.ep_return.device != reward_env.device:  # envs on a GPU (MuJoCo Warp): keep the sums there
            self.ep_return, self.ep_shaped, self.ep_success = (
                x.to(reward_env.device) for x in (self.ep_return, self.ep_shaped, self.ep_success))
        self.ep_return += reward_env.double()
        self.ep_shaped += reward.double()
        self.ep_success |= success
        for i in torch.nonzero(done).flatten().tolist():
            self.recent.append((float(self.ep_return[i]), float(self.ep_shaped[i]), bool(self.ep_success[i])))
            self.ep_return[i], self.ep_shaped[i], self.ep_success[i] = 0.0, 0.0, False
        self.recent = self.recent[-20:]

    def scalars(self, run: Run) -> dict[str, float]:
        """The scalars of one log period: reward-term means, the latest value of each learner metric
        reported since the last period (each logged once, at the first report after the update that
        set it), recent episodes, throughput. The reward-term sums and the metrics start over."""
        out = {f"reward/{'total' if k == 'reward' else k}": float(v) / max(1, self.term_count)
               for k, v in self.term_sums.items()}
        self.term_sums, self.term_count = {}, 0
        out.update({f"learner/{k}": v for k, v in self.metrics.items()})
        self.metrics = {}
        if self.recent:
            out["train/episode_return"] = float(np.mean([r[0] for r in self.recent]))
            out["train/episode_shaped_return"] = float(np.mean([r[1] for r in self.recent]))
            out["train/success_rate"] = float(np.mean([r[2] for r in self.recent]))
        B = int(run.env.num_envs)
        out["train/steps_per_second"] = (run.step - self.step0) * B / max(1e-9, time.time() - self.t0)
        if run.learner.extra_env_steps():
            out["train/extra_env_steps"] = run.learner.extra_env_steps()
        return out


class _Evaluation:
    """Periodic evaluation into ``<run_dir>/eval.jsonl`` (and videos); builds a lazy eval env once."""

    def __init__(self, eval_env, schedule: Schedule, run_dir: Path):
        self.env = None if callable(eval_env) and not hasattr(eval_env, "step") else eval_env
        self.factory = eval_env if self.env is None else None
        self.schedule, self.run_dir = schedule, run_dir

    def __call__(self, run: Run) -> dict:
        if self.env is None:
            self.env = self.factory()
        s = self.schedule
        video = self.run_dir / "videos" / f"step_{run.env_steps:09d}.mp4" if s.eval_video else None
        res = evaluate_learner(self.env, run.learner, s.eval_seed, video_path=video, video_view=s.video_view,
                               video_size=s.video_size)
        res["env_steps"] = run.env_steps
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return res

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def _first_obs(run: Run, views) -> dict:
    """Reset every env at the run's step (its derived seed) and start or resume the shaper."""
    env, shaper = run.env, run.shaper
    obs, _ = env.reset(seed=episode_seed(run.schedule.seed, run.step))
    if not run.resumed or shaper.uses_potential:
        first = obs
        if views and "images" not in obs:
            first = {**obs, "images": env.render(views)}
        shaper.start(first) if not run.resumed else shaper.resume(first)
    return obs


def _history_entry(result: dict) -> dict:
    """What :attr:`Run.history` (and each checkpoint) keeps of an evaluation."""
    return {k: result[k] for k in ("env_steps", "episodes", "success_rate", "success_ci", "return_mean", "return_ci")}


def _evaluate_at_start(run: Run, evaluation: _Evaluation, cbs, stats: _Stats) -> tuple[dict, bool]:
    """The evaluation before the first env step: the learner's ``pretrain()`` first (its metrics
    go to the first report), then :class:`_Evaluation` at env step 0 and the callbacks' ``on_eval``.
    Returns the result and whether a callback asked the loop to stop."""
    pretrain = getattr(run.learner, "pretrain", None)
    if callable(pretrain):
        metrics = pretrain()
        if metrics:
            stats.metrics = dict(metrics)
    result = evaluation(run)
    run.history.append(_history_entry(result))
    return result, any([bool(cb.on_eval(run.env_steps, result)) for cb in cbs])


def _step(run: Run, obs: dict, views, render_each_step: bool, boundary: bool, stats: _Stats) -> dict:
    """One loop step (``run.step`` already counts it): act, step the envs (cut and reseed them at a
    boundary), shape the reward, let the learner observe and update. Returns the next observation."""
    env, learner, shaper = run.env, run.learner, run.shaper
    action = learner.act(obs["state"])
    next_obs, reward_env, terminated, truncated, info = env.step(action)
    final = info.get("final_obs", next_obs)
    if boundary:  # cut every episode here (a truncation) so checkpoints sit on episode starts
        truncated = truncated | ~terminated
        next_obs, _ = env.reset(seed=episode_seed(run.schedule.seed, run.step))
    done = terminated | truncated
    hold = None
    if views and not render_each_step and (shaper.query_due() or bool(done.any())):
        imgs = env.render(views)  # current states: s' for running envs, first states for reset ones
        final = {**final, "images": imgs}
        next_obs = {**next_obs, "images": imgs}
        hold = done.clone()  # their final frames were not rendered: hold Phi for them
    reward, terms = shaper.step(reward_env, final, terminated, truncated, info["success"],
                                reset_obs=next_obs, hold=hold)
    learner.observe(Transition(obs["state"], action, reward, final["state"], terminated, truncated,
                               info={"reward_terms": terms}))
    stats.add(reward_env, reward, terms, done, info["success"], learner.update())
    return next_obs


def train(env, learner, shaper, run_dir, schedule: Schedule, *, eval_env=None, callbacks=(),
          start: Start | None = None) -> dict:
    """Train ``learner`` on ``env`` with ``shaper``'s reward for ``schedule.total_steps`` env steps.

    Args:
        env: :class:`sim.vector.BatchedEnv` (B envs); closed at the end.
        learner, shaper: see the module docstring.  run_dir: folder for ``eval.jsonl``, ``videos/``
            and whatever the callbacks write (created).
        schedule: :class:`Schedule`.  eval_env: env or zero-argument builder (needed when
            ``schedule.eval_every > 0``); closed at the end.
        callbacks: :class:`control.callbacks.Callback` objects, called in order (a progress bar
            is added first when ``schedule.progress``).
        start: a continued run's :class:`Start` (None: a new run).
    Returns:
        ``{"run_dir", "steps" (loop steps), "env_steps", "extra_env_steps", "first_eval" (the
        evaluation at env step 0, before online learning: a dict, None without one), "last_eval"
        (dict or None), "checkpoints" (folders written), "learner"}``. A resumed run's
        ``first_eval`` is the run's own step-0 entry of its history (fewer keys) when it has one.
    Raises:
        ValueError: evaluations scheduled without an ``eval_env``; checkpoint weights that do not
            fit the learner.
    """
    if schedule.eval_every and eval_env is None:
        raise ValueError("schedule.eval_every > 0 needs an eval_env (an env or a function building one)")
    B = int(env.num_envs)
    run = Run(Path(run_dir), env, learner, shaper, schedule)
    if start is not None:
        start.restore(learner, shaper)
        run.step, run.history, run.resumed = int(start.step), list(start.history), True
    run.run_dir.mkdir(parents=True, exist_ok=True)
    cbs = ([ProgressBar()] if schedule.progress else []) + list(callbacks)
    views = shaper.views if shaper.uses_potential else ()
    render_each_step = bool(step_views(shaper))
    loop_steps = schedule.loop_steps(B)
    ckpt_every, log_every = schedule.every(schedule.checkpoint_every, B), schedule.every(schedule.log_every, B)
    eval_every = schedule.every(schedule.eval_every, B) if schedule.eval_every else 0
    evaluation = _Evaluation(eval_env, schedule, run.run_dir)
    last_eval = run.history[-1] if run.history else None
    first_eval = run.history[0] if run.history and run.history[0]["env_steps"] == 0 else None
    checkpoints: list[str] = []
    try:
        for cb in cbs:
            cb.on_start(run)
        obs = _first_obs(run, views)
        stats = _Stats(B, run.step)
        stop = False
        if eval_every and schedule.eval_at_start and not run.resumed and run.step == 0:
            first_eval, stop = _evaluate_at_start(run, evaluation, cbs, stats)
            last_eval = first_eval
        while run.step < loop_steps and not stop:
            run.step += 1
            boundary = run.step % ckpt_every == 0 or run.step == loop_steps
            obs = _step(run, obs, views, render_each_step, boundary, stats)
            for cb in cbs:
                cb.on_step(run)
            if run.step % log_every == 0 or run.step == loop_steps:
                scalars = stats.scalars(run)
                for cb in cbs:
                    cb.on_log(run.env_steps, scalars)
            if boundary:
                written = [cb.on_checkpoint(run) for cb in cbs]
                checkpoints += [str(p) for p in written if p is not None]
            if eval_every and (run.step % eval_every == 0 or run.step == loop_steps):
                last_eval = evaluation(run)
                run.history.append(_history_entry(last_eval))
                stop = any([bool(cb.on_eval(run.env_steps, last_eval)) for cb in cbs])
    finally:
        for cb in cbs:
            cb.close()
        env.close()
        evaluation.close()
    return {"run_dir": str(run.run_dir), "steps": run.step, "env_steps": run.env_steps,
            "extra_env_steps": int(learner.extra_env_steps()), "first_eval": first_eval, "last_eval": last_eval,
            "checkpoints": checkpoints, "learner": learner}
