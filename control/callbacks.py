"""What the training loop reports to: callbacks for logging, progress and checkpoints.

:func:`control.train.train` calls each callback's hooks in a fixed order at fixed points of a
loop step (after the learner's update): ``on_step`` every step, ``on_log`` every ``log_every``
env steps, ``on_checkpoint`` at every checkpoint boundary (the episodes are cut there), then
``on_eval`` after a periodic evaluation; ``on_start`` once before the first step and ``close``
once at the end (also when the loop fails). A hook returns None, except ``on_checkpoint`` (the
folder it wrote, collected in the loop's summary) and ``on_eval`` (True asks the loop to stop
after this step, e.g. a benchmark that stops at a success target). So the learner and the loop
depend on no logger (as Brax's ``progress_fn``).

Here: :class:`TensorBoard` (``<run>/tb``: the config as text and hparams, every scalar the loop
reports), :class:`ProgressBar` (tqdm with live return and success), :class:`Checkpoints` (the one
checkpoint writer, :func:`control.checkpoint.save_checkpoint`, with the deployment policy, and
the ``best`` link to the best evaluated checkpoint).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from basics.atomic import atomic_symlink, write_json
from control.checkpoint import save_checkpoint
from control.evaluate import format_result
from control.export import policy_meta


@dataclass
class Run:
    """What the loop shares with its callbacks (read-only for them).

    Attributes:
        run_dir: the run folder.  env: the training :class:`sim.vector.BatchedEnv`.
        learner: the :class:`control.learner.Learner`.  shaper: the reward shaper.
        schedule: the loop's :class:`control.train.Schedule`.
        step: loop steps done (one loop step = ``env.num_envs`` env steps).
        history: the evaluations so far (``env_steps``, ``success_rate``, ``success_ci``,
            ``return_mean``, ``return_ci``), restored on resume.
        resumed: True when the run continues from a checkpoint.
    """

    run_dir: Path
    env: object
    learner: object
    shaper: object
    schedule: object
    step: int = 0
    history: list = field(default_factory=list)
    resumed: bool = False

    @property
    def env_steps(self) -> int:
        return self.step * int(self.env.num_envs)


class Callback:
    """The hooks of the training loop; every one is optional (these do nothing)."""

    def on_start(self, run: Run) -> None:
        """Before the first step (after a resumed run's state is restored)."""

    def on_step(self, run: Run) -> None:
        """After every loop step."""

    def on_log(self, env_steps: int, scalars: dict[str, float]) -> None:
        """Every ``log_every`` env steps: ``{"reward/<term>", "learner/<metric>", "train/...": float}``."""

    def on_checkpoint(self, run: Run) -> Path | None:
        """At a checkpoint boundary (all episodes were just cut); returns the folder written, if any."""
        return None

    def on_eval(self, env_steps: int, result: dict) -> bool | None:
        """After a periodic evaluation (:func:`control.evaluate.evaluate`'s dict + ``env_steps``);
        True stops the loop after this step."""
        return None

    def close(self) -> None:
        """Once at the end, also when the loop raised."""


class TensorBoard(Callback):
    """TensorBoard event files in ``log_dir``: the config as text and as hparams (new runs only),
    the loop's scalars under their own tags and each evaluation's success rate and return with
    their intervals (``eval/success_rate``, ``eval/success_ci_low``, ... ``eval/return_ci_high``).

    What online learning added: the evaluation before the first env step (env step 0, after any
    behaviour cloning; ``Schedule.eval_at_start``) is logged like the others at step 0 and as the
    text ``eval/before_online``; each later evaluation adds ``eval/success_gain`` and
    ``eval/return_gain`` (its figure minus the step-0 one), and the text ``eval/online_learning``
    holds both lines (before / after) at the last evaluation's step.

    Args:
        log_dir: the event folder (``<run>/tb``).
        config: the resolved run config (plain dict; flattened for the hparams table).
        config_text: the config as YAML for the text tab (default: the dict printed).
    """

    def __init__(self, log_dir, config: dict, config_text: str | None = None):
        self.log_dir, self.config, self.config_text = Path(log_dir), config, config_text
        self.writer = None
        self.before: dict | None = None  # the evaluation at env step 0 (before online learning)

    def on_start(self, run: Run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if run.history and run.history[0]["env_steps"] == 0:
            self.before = run.history[0]

        self.writer = SummaryWriter(str(self.log_dir), purge_step=run.env_steps if run.resumed else None)
        if not run.resumed:
            text = self.config_text if self.config_text is not None else str(self.config)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)
            flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                    for k, v in flat_config(self.config).items()}
            self.writer.add_hparams(flat, {}, run_name=".")

    def on_log(self, env_steps: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, env_steps)

    def on_eval(self, env_steps: int, result: dict) -> None:
        w = self.writer
        w.add_scalar("eval/success_rate", result["success_rate"], env_steps)
        w.add_scalar("eval/success_ci_low", result["success_ci"][0], env_steps)
        w.add_scalar("eval/success_ci_high", result["success_ci"][1], env_steps)
        w.add_scalar("eval/return_mean", result["return_mean"], env_steps)
        w.add_scalar("eval/return_ci_low", result["return_ci"][0], env_steps)
        w.add_scalar("eval/return_ci_high", result["return_ci"][1], env_steps)
        if env_steps == 0:
            self.before = result
            w.add_text("eval/before_online", "before online learning (env step 0): " + _line(result), 0)
        elif self.before is not None:
            w.add_scalar("eval/success_gain", result["success_rate"] - self.before["success_rate"], env_steps)
            w.add_scalar("eval/return_gain", result["return_mean"] - self.before["return_mean"], env_steps)
            w.add_text("eval/online_learning", f"before online learning (env step 0): {_line(self.before)}  \n"
                                               f"after online learning (env step {env_steps}): {_line(result)}", env_steps)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar over env steps with the recent episode return and success (``ret``, ``succ``), the
    last evaluation's success (``eval_succ``), and one line per evaluation."""

    def __init__(self, desc: str | None = None):
        self.desc, self.bar, self.last_eval = desc, None, None

    def on_start(self, run: Run) -> None:
        from tqdm.auto import tqdm

        total = run.schedule.loop_steps(run.env.num_envs) * int(run.env.num_envs)
        self.bar = tqdm(total=total, initial=run.env_steps, unit="step", dynamic_ncols=True,
                        desc=self.desc or f"train {run.env.task}")
        self.last_eval = run.history[-1] if run.history else None
        self.batch = int(run.env.num_envs)

    def on_step(self, run: Run) -> None:
        self.bar.update(self.batch)

    def on_log(self, env_steps: int, scalars: dict[str, float]) -> None:
        ret, succ = scalars.get("train/episode_return"), scalars.get("train/success_rate")
        post = {"ret": f"{ret:.1f}" if ret is not None else "-", "succ": f"{succ:.2f}" if succ is not None else "-"}
        if self.last_eval:
            post["eval_succ"] = f"{self.last_eval['success_rate']:.2f}"
        self.bar.set_postfix(**post)

    def on_eval(self, env_steps: int, result: dict) -> None:
        from tqdm.auto import tqdm

        self.last_eval = result
        tqdm.write(f"[{env_steps} steps] eval: {format_result(result)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def step_name(env_steps: int) -> str:
    """The checkpoint folder name of a step: ``step_<env steps, 9 digits>``."""
    return f"step_{int(env_steps):09d}"


class Checkpoints(Callback):
    """Writes ``<run>/checkpoints/step_<env steps, 9 digits>`` at every boundary
    (:func:`control.checkpoint.save_checkpoint`: weights, training state of the learner, shaper
    and loop, and the deployment policy ``deploy/`` when the learner has ``export_policy()``).

    The best evaluated checkpoint: after every evaluation made at a step with a checkpoint of this
    run, ``<run>/checkpoints/best`` is a relative link to the checkpoint with the highest evaluation
    success rate (ties: the higher mean return, then the later step) and ``best.json`` holds that
    evaluation (``checkpoint``, ``env_steps``, ``success_rate``, ``success_ci``, ``return_mean``,
    ``return_ci``, ``episodes``), as robomimic keeps the best checkpoint by success rate. Online RL
    can lose what it learned (an evaluation may fall after a high one); ``dopa deploy
    checkpoint=<run>/checkpoints/best`` deploys the best one. ``keep`` never removes the best one.

    Args:
        config: the resolved run config stored in each checkpoint (plain dict).
        keep: keep only the newest ``keep`` checkpoints (0: all; None: the schedule's
            ``checkpoint_keep``).
    """

    def __init__(self, config: dict, keep: int | None = None):
        self.config, self.keep = config, keep

    def on_start(self, run: Run) -> None:
        """Create ``<run>/checkpoints``.

        Raises:
            FileExistsError: ``checkpoints/best`` exists and is not a link (refused before the first
                step rather than at the first evaluation).
        """
        folder = run.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        best = folder / "best"
        if best.exists() and not best.is_symlink():
            raise FileExistsError(f"{str(best)!r} exists and is not a link; the run keeps its best checkpoint "
                                  "there as a link to a checkpoints/step_* folder: move it away first")
        self.run = run

    def on_eval(self, env_steps: int, result: dict) -> None:
        """Point ``checkpoints/best`` at the best evaluated checkpoint (class docstring)."""
        folder = self.run.run_dir / "checkpoints"
        scored = [h for h in self.run.history if (folder / step_name(h["env_steps"]) / "pretrained_model").is_dir()]
        if not scored:
            return
        best = max(scored, key=lambda h: (float(h["success_rate"]), float(h["return_mean"]), int(h["env_steps"])))
        name = step_name(best["env_steps"])
        link = folder / "best"
        if link.is_symlink() and os.readlink(link) == name and (folder / "best.json").is_file():
            return
        write_json(folder / "best.json", {"checkpoint": name, **best})
        atomic_symlink(link, name)

    def on_checkpoint(self, run: Run) -> Path:
        env, learner = run.env, run.learner
        env_info = {"task": env.task, "state_dim": env.state_dim, "action_dim": env.action_dim,
                    "state_layout": [[k, n] for k, n in env.state_layout]}
        deploy = None
        if hasattr(learner, "export_policy"):
            module, extra = learner.export_policy()
            meta = policy_meta(env, extra["kind"], extra.get("action_horizon", 1), extra.get("views", ()),
                               extra.get("obs_normalizer"))
            meta.update({k: v for k, v in extra.items() if k not in meta})
            deploy = (module, meta)
        folder = run.run_dir / "checkpoints"
        path = folder / step_name(run.env_steps)
        save_checkpoint(path, learner=learner, config=self.config, env_info=env_info, step=run.step,
                        env_steps=run.env_steps, loop_state={"step": run.step, "history": run.history},
                        shaping_state=run.shaper.state_dict(), deploy=deploy)
        keep = int(run.schedule.checkpoint_keep if self.keep is None else self.keep)
        if keep > 0:
            best = os.readlink(folder / "best") if (folder / "best").is_symlink() else None
            for old in sorted(folder.glob("step_*"))[:-keep]:
                if old.name != best:
                    shutil.rmtree(old, ignore_errors=True)
        return path


def _line(r: dict) -> str:
    """One evaluation as one line (:func:`control.evaluate.format_result`; a history entry written
    before entries held ``episodes`` prints without the count)."""
    return format_result({"episodes": "?", **r})


def flat_config(d, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists stay values)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_config(v, key + "."))
        else:
            out[key] = v
    return out
