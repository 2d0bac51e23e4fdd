"""The main job's preparation: find or build what ``dopa train`` needs before it trains.

``dopa train`` with its defaults (``configs/train.yaml`` + ``configs/preset/default.yaml``) trains
EXPO on robosuite Lift with a reward shaped by a GRM pretrained on other tasks and adapted to Lift
from one demonstration. Three kinds of prerequisite are prepared here, each under
``prepare.data_dir`` (default ``data/``, relative to the working directory):

1. **demonstrations** (``jobs.demos.run``, the ``dopa demos`` job): the training task's scripted
   episodes (EXPO's ``offline_data``; episode ``prepare.adapt.demo_index`` adapts the GRM) and
   ``prepare.grm.episodes`` episodes of each task in ``prepare.grm.tasks``
   -> ``<data_dir>/demos/<task>-<hash>.hdf5``;
2. **pretrained GRM** (``jobs.reward.run_train``, ``dopa reward-train``) on the other tasks'
   demonstrations -> ``<data_dir>/grm/pretrain-<hash>/`` (TensorBoard in ``..._tb``);
3. **adapted GRM** (``jobs.reward.run_adapt``, ``dopa reward-adapt``) from ONE demonstration of
   the training task -> ``<data_dir>/grm/<task>-adapted-<hash>/checkpoint``.

``<hash>`` is the first 10 hex digits of the SHA-256 of the artefact's settings (its inputs'
settings included), and the settings are recorded beside it in ``<artefact>.settings.json``,
written (atomically) only after the artefact is complete. An artefact is reused when that file
exists and records the same settings; otherwise it is built, with one line saying what and where,
and the jobs' own progress bars. A GRM pretraining interrupted half-way resumes from its
``training_state``.

Only what the config leaves open is prepared: demonstrations when the learner takes
``offline_data`` and ``offline_data`` is empty (and a scripted expert exists for the task); the GRM
when the reward uses :class:`reward_models.tracker.GRMPotential` and ``reward.checkpoint`` is
missing (``???``). ``preset=none`` (``prepare.enabled=false``) switches all of it off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf, open_dict

import sim
from basics.atomic import write_json
from basics.checks import check_int
from control.checkpoint import CheckpointError, load_checkpoint
from jobs.build import takes_offline_data
from jobs.cli import compose
from jobs.demos import run as run_demos
from jobs.reward import run_adapt as run_reward_adapt
from jobs.reward import run_train as run_reward_train
from reward_models.shaping import MODES
from sim.experts import EXPERT_TASKS
from sim.render import OFFSCREEN_SAMPLES

__all__ = ["prepare", "settings_hash", "find_or_build", "is_grm_potential"]

#: ``reward.potential._target_`` values that load a GRM checkpoint (the potential or its typed config).
GRM_TARGETS = ("reward_models.tracker.GRMPotential", "reward_models.tracker.GRMPotentialConfig")


def is_grm_potential(pot) -> bool:
    """Whether the ``reward.potential`` node builds the GRM progress tracker (it loads ``reward.checkpoint``)."""
    return pot is not None and pot.get("_target_") in GRM_TARGETS


def settings_hash(settings: dict) -> str:
    """First 10 hex digits of the SHA-256 of ``settings`` as canonical JSON (sorted keys)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _check_counts(p, needs_grm: bool) -> None:
    """Refuse ``prepare`` counts that would fail only after minutes of building: every count an
    int >= 1 (``demos.n``; with a GRM to build also ``grm.episodes``, ``grm.steps``,
    ``grm.batch_size``, ``adapt.steps``, ``adapt.batch_size``), and ``adapt.demo_index`` in
    [0, ``demos.n``). Raises ValueError naming the key, the value and what is allowed."""
    keys = [("demos", "n")]
    if needs_grm:
        keys += [("grm", "episodes"), ("grm", "steps"), ("grm", "batch_size"), ("adapt", "steps"),
                 ("adapt", "batch_size")]
    for group, key in keys:
        check_int(f"prepare.{group}.{key}", p[group][key], 1)
    if needs_grm:
        n, idx = int(p.demos.n), p.adapt.demo_index
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n:
            raise ValueError(f"prepare.adapt.demo_index must be an int in [0, prepare.demos.n={n}), got {idx!r}")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".settings.json")


def _recorded(path: Path) -> dict | None:
    side = _sidecar(path)
    if not (path.exists() and side.is_file()):
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _record(path: Path, settings: dict) -> None:
    write_json(_sidecar(path), json.loads(json.dumps(settings, sort_keys=True, default=str)))


def find_or_build(what: str, path: Path, settings: dict, build) -> Path:
    """Reuse ``path`` when ``<path>.settings.json`` records exactly ``settings``; else print
    ``building <what> -> <path>``, call ``build(path)`` and record the settings.

    Args:
        what: a human description, e.g. ``"lift demos (20 episodes, 2 views, 64 px)"``.
        path: the artefact (file or folder); its parent is created.
        settings: JSON-serialisable dict of everything the artefact depends on.
        build: ``fn(path)`` that writes the artefact (atomically).
    Returns:
        ``path``.
    Raises:
        RuntimeError: ``build`` returned without writing ``path``.
    """
    settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if _recorded(path) == settings:
        print(f"found {what}: {path} (same settings, reused)", flush=True)
        return path
    print(f"building {what} -> {path}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    build(path)
    if not path.exists():
        raise RuntimeError(f"building {what} did not write {path}")
    _record(path, settings)
    return path


def _job_cfg(config: str, values: dict):
    """The job's default config (``configs/<config>.yaml``) with ``values`` merged in."""
    cfg = compose(config, [])
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, OmegaConf.create(values))


def _check_job(name: str, rc) -> None:
    if rc not in (0, None):
        raise RuntimeError(f"the {name} job exited with code {rc}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if int(n) == 1 else 's'}"


def _demos(data_dir: Path, task: str, n: int, views: list, image_size: int, controller: str,
           seed: int) -> Path:
    settings = {"kind": "demos", "task": task, "n": int(n), "views": list(views), "image_size": int(image_size),
                "controller": controller, "seed": int(seed)}
    if views:  # frames rendered with other settings are other data
        settings["offscreen_samples"] = OFFSCREEN_SAMPLES
    path = data_dir / "demos" / f"{task}-{settings_hash(settings)}.hdf5"
    what = (f"{task} demos ({_count(n, 'episode')}, {_count(len(views), 'view')}, {image_size} px, "
            f"{controller})")

    def build(out: Path):
        _check_job("demos", run_demos(_job_cfg("demos", {**{k: v for k, v in settings.items() if k != "kind"},
                                                        "out": str(out)})))

    find_or_build(what, path, settings, build)
    return path


def _pretrain(data_dir: Path, demo_files: dict, demo_settings: dict, views: list, g) -> Path:
    pairs = _job_cfg("reward_train", {}).pairs  # how training pairs are made is part of what is built
    settings = {"kind": "grm-pretrain", "demos": demo_settings, "views": list(views), "steps": int(g.steps),
                "batch_size": int(g.batch_size), "seed": 0, "goal_pair_prob": float(pairs.goal_pair_prob),
                "start_pair_prob": float(pairs.start_pair_prob)}
    path = data_dir / "grm" / f"pretrain-{settings_hash(settings)}"

    def build(out: Path):
        cfg = _job_cfg("reward_train", {"data": [str(p) for p in demo_files.values()], "views": list(views),
                                        "out": str(out), "steps": int(g.steps), "batch_size": int(g.batch_size),
                                        "save_every": max(1, int(g.steps) // 3), "resume": True})
        _check_job("reward-train", run_reward_train(cfg))

    find_or_build(f"GRM pretrained on {', '.join(demo_files)} ({g.steps} steps)", path, settings, build)
    return path


def _adapt(data_dir: Path, task: str, pretrained: Path, pretrain_hash: str, demo: Path, demo_hash: str, a) -> Path:
    settings = {"kind": "grm-adapt", "task": task, "pretrained": pretrain_hash, "demo": demo_hash,
                "demo_index": int(a.demo_index), "steps": int(a.steps), "batch_size": int(a.batch_size), "seed": 0,
                "replay_share": 0.0, "loss": "ce+mse"}  # demonstration only: the main job needs its task alone
    # Measured on one pretrained GRM and one Lift demonstration, 1,000 steps (README, the main job):
    # Lift completion accuracy 0.21 before; after: demonstration only with ce+mse 0.95 (VOC 0.999), with
    # mse 0.74 (VOC 0.998); rehearsing the pretraining pairs (replay_share 0.5, reward-adapt's
    # default) with ce+mse 0.79 (VOC 0.998), with mse 0.21 (VOC 0.96).
    folder = data_dir / "grm" / f"{task}-adapted-{settings_hash(settings)}"

    def build(out: Path):
        cfg = _job_cfg("reward_adapt", {"checkpoint": str(pretrained), "demo": str(demo),
                                        "demo_index": int(a.demo_index), "steps": int(a.steps),
                                        "batch_size": int(a.batch_size), "out": str(out),
                                        "replay_share": settings["replay_share"], "loss": settings["loss"]})
        _check_job("reward-adapt", run_reward_adapt(cfg))

    find_or_build(f"GRM adapted to {task} from demo {a.demo_index} ({a.steps} steps)", folder, settings, build)
    return folder / "checkpoint"


def _checkpoint_texts(checkpoint: str) -> list[str]:
    """Task texts a GRM checkpoint folder holds references for ([] when it is not one)."""
    try:
        return list(json.loads((Path(checkpoint) / "config.json").read_text()).get("tasks", {}).values())
    except (OSError, ValueError, AttributeError):
        return []


def _from_resume(cfg):
    """On resume, the prepared files are the ones the checkpoint was trained with."""
    try:
        old = load_checkpoint(cfg.resume).config
    except CheckpointError:
        return cfg  # the training loop reports the bad resume path
    with open_dict(cfg):
        if not cfg.get("offline_data") and old.get("offline_data"):
            cfg.offline_data = list(old["offline_data"])
        r_old = old.get("reward") or {}
        if OmegaConf.is_missing(cfg.reward, "checkpoint") and r_old.get("checkpoint") is not None:
            cfg.reward.checkpoint = r_old["checkpoint"]
            if cfg.reward.get("potential") is not None:
                for k, v in (r_old.get("potential") or {}).items():
                    if k not in cfg.reward.potential or OmegaConf.is_missing(cfg.reward.potential, k):
                        cfg.reward.potential[k] = v
    return cfg


def prepare(cfg):
    """Find or build the main job's prerequisites and fill them into a copy of ``cfg``.

    Args:
        cfg: the composed ``dopa train`` config (omegaconf.DictConfig) with a ``prepare`` section
            (``enabled``, ``data_dir``, ``eval_video``, ``demos.{n, views, seed}``,
            ``grm.{tasks, episodes, steps, batch_size}``, ``adapt.{demo_index, steps, batch_size}``).
            Demonstration images have ``env.image_size`` pixels per side; the training task's
            demonstrations use ``env.kwargs.controller``, the other tasks' ``osc_pose``.
    Returns:
        A new DictConfig: ``offline_data`` = the training task's demonstration file (when the
        learner takes offline data and none was given); ``reward.checkpoint`` (and
        ``reward.potential.checkpoint``) = the adapted GRM (when missing);
        ``reward.potential.task_text`` = the task's text from ``sim/tasks.py`` (when unset, for a
        GRM potential); ``eval.video`` = ``prepare.eval_video`` when the GRM was prepared.
        ``cfg`` itself when ``prepare`` is absent or ``prepare.enabled`` is false.
    Raises:
        ValueError: an unknown reward mode; a GRM reward to prepare for a task without a scripted
            expert (naming the tasks that have one); a GRM task list that is empty after removing
            the training task; a count below 1 or ``adapt.demo_index`` outside [0, ``demos.n``)
            (named, before anything is built). RuntimeError: a preparation job failed.
    """
    p = cfg.get("prepare")
    if p is None or not p.get("enabled", False):
        pot = cfg.reward.get("potential") if cfg.get("reward") is not None else None
        if is_grm_potential(pot) and OmegaConf.is_missing(cfg.reward, "checkpoint"):
            raise ValueError(f"reward={cfg.reward.get('name')} needs reward.checkpoint=<GRM checkpoint folder>; "
                             f"with preset=none (prepare.enabled=false) nothing is built for you")
        return cfg
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    mode = cfg.reward.get("mode")
    if mode not in MODES:
        raise ValueError(f"unknown reward mode {mode!r}; known: {', '.join(MODES)}")
    if cfg.get("resume"):
        return _from_resume(cfg)

    task = str(cfg.env.name)
    pot = cfg.reward.get("potential")
    grm_reward = is_grm_potential(pot)
    needs_grm = grm_reward and OmegaConf.is_missing(cfg.reward, "checkpoint")
    needs_demos = (not cfg.get("offline_data") and takes_offline_data(cfg.learner)
                   and task in EXPERT_TASKS)
    if needs_grm and task not in EXPERT_TASKS:
        raise ValueError(f"reward={cfg.reward.get('name')} needs a GRM checkpoint and task {task!r} has no scripted "
                         f"expert to build one from; pass reward.checkpoint=<GRM checkpoint> or use a task with an "
                         f"expert: {', '.join(EXPERT_TASKS)}")
    if (needs_grm or needs_demos) and str(cfg.env.get("backend", "cpu")) != "cpu":
        raise ValueError(f"automatic preparation records demonstrations on the CPU backend; got env.backend="
                         f"{cfg.env.get('backend')!r}: pass offline_data=[...] and reward.checkpoint=... (or preset=none)")
    if needs_grm or needs_demos:
        _check_counts(p, needs_grm)
    data_dir = Path(str(p.data_dir))
    views = [str(v) for v in p.demos.views]
    size = int(cfg.env.image_size)
    controller = str((cfg.env.get("kwargs") or {}).get("controller", "osc_pose"))
    main_demos = None
    if needs_demos or needs_grm:
        main_demos = _demos(data_dir, task, int(p.demos.n), views, size, controller, int(p.demos.seed))
    with open_dict(cfg):
        if needs_demos:
            cfg.offline_data = [str(main_demos)]
        if needs_grm:
            tasks = [str(t) for t in p.grm.tasks if str(t) != task]
            if not tasks:
                raise ValueError(f"prepare.grm.tasks must name tasks other than the training task {task!r}, "
                                 f"got {list(p.grm.tasks)}")
            unknown = [t for t in tasks if t not in EXPERT_TASKS]
            if unknown:
                raise ValueError(f"prepare.grm.tasks: no scripted expert for {unknown}; known: {', '.join(EXPERT_TASKS)}")
            files, demo_settings = {}, {}
            for t in tasks:
                files[t] = _demos(data_dir, t, int(p.grm.episodes), views, size, "osc_pose", int(p.demos.seed))
                demo_settings[t] = files[t].stem
            pretrained = _pretrain(data_dir, files, demo_settings, views, p.grm)
            adapted = _adapt(data_dir, task, pretrained, pretrained.name, main_demos, main_demos.stem, p.adapt)
            cfg.reward.checkpoint = str(adapted)
            cfg.reward.potential.checkpoint = str(adapted)
            if p.get("eval_video"):
                cfg.eval.video = True
        if grm_reward and cfg.reward.potential.get("task_text") is None and not cfg.reward.potential.get("reference"):
            text = sim.task_text(task)
            if text in _checkpoint_texts(str(cfg.reward.checkpoint)):
                cfg.reward.potential.task_text = text
    return cfg
