"""``dopa train env=... learner=... reward=sparse|dense|grm|naive|state|oracle``: build and run the loop.

The job composes ``configs/train.yaml`` (:func:`compose_config`), prepares the main job's files
(:func:`jobs.prepare.prepare`), builds the env, learner and reward shaper (:mod:`jobs.build`) and
hands them to the one training loop :func:`control.train.train` with its callbacks (TensorBoard
in ``<run>/tb`` with the whole config as text and hparams; checkpoints with the deployment policy
in ``<run>/checkpoints``; a progress bar).

Run folder: ``runs/<env>__<learner>__<reward>__seed<seed>__<time>/{config.json, checkpoints, tb,
videos, eval.jsonl}`` (or ``run_dir``).

Resume: ``resume=<checkpoint or run folder>`` loads the checkpoint, checks that it fits the env,
and continues the run exactly (:class:`control.train.Start`), in the checkpoint's own run folder
(the folder holding ``checkpoints/step_*``, not the ``run_dir`` stored in its config: a copied run
continues in the copy); ``run_dir=`` may name a new folder instead, never another run
(:func:`resume_run_dir`). The run's own stored config is the base (:func:`compose_config`): overrides given with
``resume=`` apply only to :data:`RESUME_MAY_CHANGE` keys; any other change is refused, naming the
key, its stored and its given value.
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from basics.atomic import write_json
from basics.checks import check_seed
from control.callbacks import Checkpoints, TensorBoard, flat_config
from control.checkpoint import CheckpointError, check_env_compatible, load_checkpoint
from control.evaluate import format_result
from control.train import Schedule, Start, step_views, train
from jobs.build import (
    build_env,
    build_learner,
    build_shaper,
    check_adversary,
    check_offline_start,
    relabel_offline_data,
    seed_everything,
)
from jobs.cli import compose
from jobs.prepare import prepare

#: Config keys that may differ between a checkpoint and the run resuming it (fnmatch patterns):
#: the run's length, its evaluation / logging / checkpoint cadence, where it writes, and display.
RESUME_MAY_CHANGE = ("total_steps", "learner.total_steps", "adversary.total_steps", "resume", "run_dir", "eval.*", "progress",
                     "log_every", "threads", "checkpoint_every", "checkpoint_keep")

#: Stored keys that follow another key on resume (configs/learner/ppo.yaml: ``total_steps: ${total_steps}``):
#: when the stored value equals the source's stored value, a new source value carries over.
RESUME_FOLLOWS = {"learner.total_steps": "total_steps", "adversary.total_steps": "total_steps"}


# ---------------------------------------------------------------------------------------------
# The resume config rules
# ---------------------------------------------------------------------------------------------

def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts (added and removed keys included)."""
    a, b = flat_config(old), flat_config(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))


def _may_change(key: str) -> bool:
    return any(fnmatch.fnmatch(key, p) for p in RESUME_MAY_CHANGE)


def _refuse_resume(keys: list[str], stored: dict, given: dict) -> None:
    """Raise the one-line ValueError naming each key with its stored and its given value."""
    details = "; ".join(f"{k}: {stored.get(k, '<missing>')!r} -> {given.get(k, '<missing>')!r}" for k in keys)
    raise ValueError(f"cannot resume: the config changed in keys that must stay fixed (the run's stored value -> "
                     f"the given one): {details}. Leave them out to continue the run as it was configured. "
                     f"Keys allowed to change: {', '.join(RESUME_MAY_CHANGE)}")


def check_resume_config(old: dict, new: dict) -> None:
    """Raise ValueError listing the changed keys that may not change on resume (with old -> new)."""
    bad = [k for k in changed_keys(old, new) if not _may_change(k)]
    if bad:
        _refuse_resume(bad, flat_config(old), flat_config(new))


def _set_dotted(tree: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(tree.get(p), dict):
            tree[p] = {}
        tree = tree[p]
    tree[leaf] = value


def _del_dotted(tree: dict, key: str) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        tree = tree.get(p)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def given_keys(overrides: list[str], defaults: dict, given: dict) -> set[str]:
    """Dotted config keys the user set with ``overrides``: each key they name and every key under a
    group or node they name (``learner=sac`` sets all of ``learner.*``), plus every key whose value
    the overrides changed from the defaults (``preset=quick`` sets its keys).

    Args:
        overrides: Hydra override strings.  defaults, given: the resolved config without and with them.
    """
    names = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]
    a, b = flat_config(defaults), flat_config(given)
    keys = set(changed_keys(defaults, given))
    for k in set(a) | set(b):
        if any(k == n or k.startswith(n + ".") for n in names):
            keys.add(k)
    return keys


def resume_config(stored: dict, given: dict, keys) -> dict:
    """The config a resumed run continues with: the run's ``stored`` config, with each key of
    ``keys`` (those the user set) taken from ``given`` where :data:`RESUME_MAY_CHANGE` allows it.

    Args:
        stored: the checkpoint's resolved config.  given: the composed config (defaults +
            overrides), resolved.  keys: dotted keys the user set (:func:`given_keys`).
    Returns:
        A new plain dict.
    Raises:
        ValueError: one line naming every set key that must stay fixed but differs from the stored
            config, with the stored and the given value.
    """
    out = copy.deepcopy(stored)
    s, g = flat_config(stored), flat_config(given)
    missing = object()
    bad = []
    for k in sorted(keys):
        sv, gv = s.get(k, missing), g.get(k, missing)
        if sv == gv or (sv is missing and gv is None):
            continue
        if not _may_change(k):
            bad.append(k)
        elif gv is missing:
            _del_dotted(out, k)
        else:
            _set_dotted(out, k, gv)
            for follower, source in RESUME_FOLLOWS.items():
                if source == k and follower not in keys and s.get(follower, missing) == sv:
                    _set_dotted(out, follower, gv)
    if bad:
        _refuse_resume(bad, s, g)
    return out


def compose_config(overrides: list[str]) -> DictConfig:
    """``dopa train``'s config: ``configs/train.yaml`` with Hydra ``overrides`` or, with
    ``resume=<checkpoint or run folder>``, the run's own stored config with the overrides applied
    on top where changing them is safe (:data:`RESUME_MAY_CHANGE`: length, evaluation / logging /
    checkpoint cadence, output folder, progress bar). ``dopa train resume=runs/X`` thus continues
    the run as it was configured, whatever the defaults are now.

    Returns:
        omegaconf.DictConfig (struct mode).
    Raises:
        SystemExit(2): a malformed override or unknown key (:func:`jobs.cli.compose`).
        ValueError: an override of a fixed key (env, learner, reward, seeds, sizes, ...) that
            differs from the run's stored value (key, stored and given value named). A missing or
            corrupt checkpoint is reported by :func:`setup`.
    """
    cfg = compose("train", overrides)
    if not cfg.get("resume"):
        return cfg
    try:
        ckpt = load_checkpoint(cfg.resume)
    except CheckpointError:
        return cfg  # setup() names the bad path
    if not isinstance(ckpt.config, dict) or "env" not in ckpt.config or "learner" not in ckpt.config:
        raise ValueError(f"resume={str(cfg.resume)!r}: the checkpoint stores no dopa train config (written by "
                         "control.train.train with Checkpoints(config={})?), so there is no run to continue")
    given = OmegaConf.to_container(cfg, resolve=True)
    defaults = OmegaConf.to_container(compose("train", []), resolve=True)
    keys = given_keys(overrides, defaults, given)
    plain = resume_config(ckpt.config, given, keys)
    if "run_dir" not in keys:  # the stored run_dir names the run the checkpoint was written in, maybe another copy
        own, stored = _own_run(ckpt), plain.get("run_dir")
        if not (own is not None and stored and _same_folder(stored, own)):
            plain["run_dir"] = str(own) if own is not None else None
    resume_run_dir(ckpt, plain.get("run_dir"))  # refused here, before anything is prepared
    merged = OmegaConf.create(plain)
    OmegaConf.set_struct(merged, True)
    return merged


def _own_run(ckpt) -> Path | None:
    """The run folder holding checkpoint ``ckpt`` (``<run>/checkpoints/step_*``), or None."""
    return ckpt.path.parent.parent if ckpt.path.parent.name == "checkpoints" else None


def _same_folder(a, b) -> bool:
    return Path(str(a)).resolve() == Path(str(b)).resolve()


def resume_run_dir(ckpt, run_dir) -> Path | None:
    """The folder a run resumed from ``ckpt`` writes into: the run it resumes from (the folder
    holding ``<run>/checkpoints/<ckpt>``) when ``run_dir`` is not given; ``run_dir`` when it is that
    run, a new or empty folder (a copy of the run continues there), or ``ckpt`` is not inside a run
    folder. None: a checkpoint outside any run and no ``run_dir`` (a new run folder is named).

    Raises:
        ValueError: ``run_dir`` is another existing run's folder (both folders named): a resume
            never writes into another run.
    """
    own = _own_run(ckpt)
    if run_dir is None or str(run_dir) == "":
        return own
    run_dir = Path(str(run_dir))
    if own is None or _same_folder(run_dir, own) or not run_dir.exists() or (
            run_dir.is_dir() and not any(run_dir.iterdir())):
        return run_dir
    raise ValueError(f"resume={str(ckpt.path)!r} belongs to the run in {str(own)!r}, but run_dir={str(run_dir)!r} "
                     "is another existing folder; a resumed run writes into the run it resumes from (leave run_dir "
                     "out) or into a new folder, never into another run")


# ---------------------------------------------------------------------------------------------
# Config -> the loop's pieces
# ---------------------------------------------------------------------------------------------

def schedule_of(cfg: DictConfig) -> Schedule:
    """The loop's :class:`control.train.Schedule` from a ``dopa train`` config.

    Raises:
        ValueError: ``total_steps``, ``checkpoint_every`` ... not an int in range (named).
    """
    ev = cfg.get("eval") or {}
    return Schedule(total_steps=cfg.get("total_steps"), checkpoint_every=cfg.get("checkpoint_every"),
                    eval_every=ev.get("every") or 0, eval_seed=ev.get("seed", 1_000_000),
                    eval_at_start=bool(ev.get("at_start", False)),
                    eval_video=bool(ev.get("video", False)), video_view=ev.get("video_view"),
                    video_size=ev.get("video_size"), log_every=cfg.get("log_every", 1000),
                    checkpoint_keep=cfg.get("checkpoint_keep", 0) or 0, seed=cfg.seed,
                    progress=bool(cfg.get("progress", True)))


def check_seeds(cfg: DictConfig) -> None:
    """``seed`` (sub-env ``i`` of ``num_envs`` resets with ``seed + i``) and ``eval.seed`` (one episode
    per seed, ``eval.episodes`` of them) as 32-bit seeds (:func:`basics.checks.check_seed`), checked
    before anything is prepared or built.

    Raises:
        ValueError: one line naming the key and value and the allowed range.
    """
    def count(value) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1

    check_seed(cfg.get("seed"), key="seed", count=count(cfg.get("num_envs")))
    ev = cfg.get("eval") or {}
    if "seed" in ev:
        check_seed(ev.get("seed"), key="eval.seed", count=count(ev.get("episodes")))


def _run_name(cfg: DictConfig, learner) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    reward = cfg.reward.get("name") or cfg.reward.mode
    return f"{cfg.env.name}__{getattr(learner, 'name', 'learner')}__{reward}__seed{cfg.seed}__{stamp}"


@dataclass
class Setup:
    """Everything :func:`control.train.train` takes, built from a ``dopa train`` config."""

    env: object
    learner: object
    shaper: object
    run_dir: Path
    schedule: Schedule
    eval_env: object  # a zero-argument builder: the evaluation env is built at the first evaluation
    callbacks: list
    start: Start | None
    config: dict

    def train(self, callbacks=()) -> dict:
        """Run :func:`control.train.train` on these pieces (extra ``callbacks`` after the job's)."""
        return train(self.env, self.learner, self.shaper, self.run_dir, self.schedule, eval_env=self.eval_env,
                     callbacks=[*self.callbacks, *callbacks], start=self.start)


def _build_pieces(cfg: DictConfig, ckpt, config: dict):
    """Env (built first without views, as a probe), learner and shaper; the env is rebuilt with the
    potential's views when it is queried every step, and with the simulator's ground-truth progress
    when the potential reads it (``reward=oracle``). Closes what it built when something fails."""
    device = cfg.get("device", "cpu")
    num_envs, seed = int(cfg.num_envs), int(cfg.seed)
    probe = build_env(cfg.env, num_envs=num_envs, seed=seed, device=device)
    try:
        if ckpt is not None:
            check_env_compatible(ckpt, probe)
            check_resume_config(ckpt.config, config)
        learner = build_learner(cfg.learner, probe, seed=seed, device=device,
                                offline_data=list(cfg.get("offline_data") or []), adversary=cfg.get("adversary"))
        # the reward's own models (a GRM, its text encoder) draw their initial weights from torch's
        # global stream before their checkpoints load: on a fork of it, so that the learner's
        # behaviour cloning and updates draw the same numbers in every reward arm of one seed
        with torch.random.fork_rng(devices=[]):
            shaper = build_shaper(cfg.reward, probe, learner)
            if cfg.reward.get("relabel_offline", True):  # one reward for every transition, offline ones included
                relabel_offline_data(cfg.reward, probe, learner)
    except BaseException:
        probe.close()
        raise
    views, progress = step_views(shaper), shaper.needs_progress
    env = probe
    if views or progress:
        probe.close()
        env = build_env(cfg.env, num_envs=num_envs, views=views, seed=seed, device=device, progress=progress)
    if hasattr(learner, "bind_env"):  # QARL's adversary pushes the training env's bodies
        try:
            learner.bind_env(env)
        except BaseException:
            env.close()
            raise
    return env, learner, shaper


def setup(cfg: DictConfig) -> Setup:
    """Seed, load the checkpoint to resume (if any), build the pieces, pick and create the run
    folder and write its ``config.json``.

    Raises:
        ValueError: bad config values (named), a resume with changed fixed keys, a checkpoint that
            does not fit the env. control.checkpoint.CheckpointError: missing or corrupt checkpoint.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    check_seeds(cfg)
    schedule = schedule_of(cfg)
    if isinstance(cfg.get("num_envs"), bool) or not isinstance(cfg.get("num_envs"), int) or cfg.num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {cfg.get('num_envs')!r}")
    seed_everything(cfg.seed, cfg.get("threads", 1))
    ckpt = load_checkpoint(cfg.resume) if cfg.get("resume") else None
    resumed_dir = resume_run_dir(ckpt, cfg.get("run_dir")) if ckpt is not None else None  # before building
    env, learner, shaper = _build_pieces(cfg, ckpt, config)
    try:
        start = Start.from_checkpoint(ckpt) if ckpt is not None else None
        if resumed_dir is not None:
            run_dir = resumed_dir  # the run it resumes from (or a new folder given as run_dir)
        elif cfg.get("run_dir"):
            run_dir = Path(cfg.run_dir)
        else:
            run_dir = Path("runs") / _run_name(cfg, learner)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config)
    except BaseException:
        env.close()
        raise
    episodes, eval_seed, device = int(cfg.eval.episodes), int(cfg.eval.seed), cfg.get("device", "cpu")
    callbacks = [TensorBoard(run_dir / "tb", config, OmegaConf.to_yaml(cfg)), Checkpoints(config)]
    return Setup(env, learner, shaper, run_dir, schedule,
                 lambda: build_env(cfg.env, num_envs=episodes, seed=eval_seed, device=device),
                 callbacks, start, config)


def train_from_config(cfg: DictConfig, callbacks=()) -> dict:
    """:func:`setup` then :func:`control.train.train`: what ``dopa train`` runs after preparing.

    Returns:
        The loop's summary (``run_dir``, ``steps``, ``env_steps``, ``last_eval``, ``checkpoints``,
        ``learner``, ...).
    """
    return setup(cfg).train(callbacks)


def report(out: dict) -> None:
    """Print where the run went and its figures: the evaluation before online learning (env step 0,
    after any behaviour cloning) and the last one, each with its 95 % intervals (or the last alone
    when the run has no step-0 evaluation), and the best evaluated checkpoint
    (``checkpoints/best``) when it is not the last.

    Args:
        out: the loop's summary (:func:`control.train.train`).
    """
    run_dir = Path(out["run_dir"])
    print(f"dopa train: {out['env_steps']} env steps -> {run_dir}")
    if out["checkpoints"]:
        newest = Path(out["checkpoints"][-1])
        deploy = f"; deployment policy {newest / 'deploy'}" if (newest / "deploy").is_dir() else ""
        print(f"  checkpoints: {run_dir / 'checkpoints'} (newest {newest.name}{deploy})")
    print(f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    print(f"  videos: {run_dir / 'videos'} ({len(videos)} MP4)" if videos else "  videos: none (eval.video=true records them)")
    first, last = out.get("first_eval"), out["last_eval"]
    if first and last and last["env_steps"] > 0:  # what online learning added, same routine and seeds
        print(f"before online learning (env step 0, after any behaviour cloning): "
              f"{format_result({'episodes': '?', **first})}")
        print(f"after online learning (env step {last['env_steps']}): {format_result(last)}")
    elif last and "episodes" in last:
        print(f"last evaluation: {format_result(last)}")
    best = run_dir / "checkpoints" / "best.json"
    b = json.loads(best.read_text()) if best.is_file() and last else None
    if b is not None and b["env_steps"] != last["env_steps"]:
        print(f"best evaluation (env step {b['env_steps']}): {format_result(b)}\n"
              f"  its checkpoint: {run_dir / 'checkpoints' / 'best'} -> {b['checkpoint']} "
              f"(dopa deploy checkpoint={run_dir / 'checkpoints' / 'best'})")


def run(cfg: DictConfig) -> int:
    """Train a policy in simulation: ``dopa train env=<task> learner=<sac|ppo|...> reward=<sparse|dense|grm|naive|state|oracle>``.

    With no overrides: the main job (EXPO on Lift, reward shaped by a GRM pretrained on other tasks
    and adapted to Lift from one demonstration); ``preset=default|quick|none`` sets its size, and
    :func:`jobs.prepare.prepare` finds or builds the demonstrations and GRMs under
    ``prepare.data_dir`` first.

    Writes ``runs/<env>__<learner>__<reward>__seed<seed>__<time>/`` (checkpoints, TensorBoard, videos,
    eval.jsonl). ``resume=<checkpoint or run folder>`` continues a run exactly, as it was configured
    (its stored config; only total_steps and the evaluation / logging / checkpoint cadence may be
    changed alongside).
    """
    try:
        check_seeds(cfg)  # before the main job's files are prepared
        check_adversary(cfg)
        cfg = prepare(cfg)  # the main job's demos and GRM, found or built (jobs/prepare.py)
        check_offline_start(cfg)  # a learner that clones demos, with none: before the env is built
        out = train_from_config(cfg)
    except (CheckpointError, ValueError) as exc:
        raise SystemExit(f"dopa train: error: {exc}") from None
    report(out)
    return 0
