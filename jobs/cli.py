"""The ``dopa`` command: the first word picks the job, the remaining words are Hydra overrides.

    dopa --help                       list the jobs
    dopa <job> --help                 the job's description and its default config
    dopa <job> [key=value ...]        run the job (Hydra override grammar)
    dopa <job> -m key=a,b [...]       a multirun: one job per combination (jobs/multirun.py)

Every job is registered in :data:`JOBS` below and nowhere else. A job is a function
``run(cfg: omegaconf.DictConfig) -> int | None`` in a module that is imported only when the job
runs, and a top-level Hydra config ``configs/<config>.yaml`` shipped with the package. A job may
name a ``composer`` ``(overrides) -> cfg`` that builds its config instead of
:func:`compose` (``dopa train resume=...`` starts from the run's stored config); a ValueError
it raises is a bad override (one line, exit code 2).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import signal
import sys
import tempfile
import threading

# Localhost-only DDS discovery unless the user or a robot config says otherwise; set before any
# rclpy import (see README, "ROS 2 traffic").
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclasses.dataclass(frozen=True)
class Job:
    target: str  # "package.module:function"
    config: str  # config name under configs/
    summary: str  # one line for `dopa --help`
    composer: str | None = None  # "module:function" (overrides) -> cfg, when the job builds its own config


#: The one place where jobs register. Keep the summaries to one line.
JOBS: dict[str, Job] = {
    "train": Job("jobs.train:run", "train",
                 "Train a policy in simulation (env=, learner=, reward=sparse|dense|grm|naive|state|oracle).",
                 composer="jobs.train:compose_config"),
    "eval": Job("jobs.evaluate:run", "eval",
                "Evaluate a checkpoint on a fixed list of seeds (success rate with Wilson CI)."),
    "demos": Job("jobs.demos:run", "demos",
                 "Record scripted demonstrations (with imperfect ones) to an HDF5 file and optional videos."),
    "reward-train": Job("jobs.reward:run_train", "reward_train",
                        "Pretrain the GRM (hop model) on episode files of several tasks."),
    "reward-eval": Job("jobs.reward:run_eval", "reward_eval",
                       "Per-task VOC, completion accuracy and progress MAE of a GRM; progress plots."),
    "reward-adapt": Job("jobs.reward:run_adapt", "reward_adapt",
                        "One-shot adaptation of a GRM to a new task from one demonstration."),
    "deploy": Job("jobs.deploy:run_deploy", "deploy",
                  "Run a deployment policy on a ROS 2 arm (lifecycle policy node; starts disarmed)."),
    "sim-robot": Job("jobs.deploy:run_sim_robot", "sim_robot",
                     "MuJoCo stand-in for a ros2_control arm (JointState, Images; executes JointTrajectory)."),
    "import": Job("jobs.importing:run", "import",
                  "Import demonstrations recorded elsewhere (robomimic HDF5, LeRobot v3 folder, MP4 per view)."),
    "tasks": Job("jobs.tasks:run_tasks", "tasks",
                 "List the simulation tasks, their views and layouts; optionally render a view grid."),
    "robustness": Job("jobs.robustness:run", "robustness",
                      "A checkpoint's return over mass x friction (x gain) grids: heatmaps, grid mean, worst cell."),
}


#: ``dopa <job> -m ...``: the multirun of any job above ("module:function" (name, job, args) -> exit code)
MULTIRUN = "jobs.multirun:run_multirun"
#: the check of a config's ``distributed`` keys (data-parallel ranks), run with the common checks
DISTRIBUTED_CHECK = "jobs.torchrun:check_distributed"


def _usage() -> str:
    width = max(len(n) for n in JOBS)
    lines = [
        "usage: dopa <job> [key=value ...]     (Hydra overrides; 'dopa <job> --help' shows the config)",
        "",
        "jobs:",
    ]
    lines += [f"  {name:<{width}}  {job.summary}" for name, job in JOBS.items()]
    return "\n".join(lines)


def compose(config: str, overrides: list[str], job: str | None = None):
    """Compose ``configs/<config>.yaml`` with Hydra ``overrides`` (``job``: the name the error
    lines start with, default ``config``).

    Returns:
        omegaconf.DictConfig, resolved.
    Raises:
        SystemExit(2) with Hydra's message when an override is malformed or names an unknown key;
        with one line naming the group, the value and the available choices (the ``.yaml`` files
        of ``configs/<group>/``) when a config group choice is unknown (``env=nope``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    outer = GlobalHydra.instance().hydra  # inside a job of a multirun (the launcher's Hydra): set aside
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="configs", version_base="1.3"):
            cfg = hydra_compose(config_name=config, overrides=replace_overrides(config, overrides))
        OmegaConf.resolve(cfg)
    except MissingConfigException as exc:
        print(f"dopa {job or config}: error: {_missing_choice(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (HydraException, OmegaConfBaseException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line: no link to the grammar
        print(f"dopa {job or config}: error: {_unknown_key(config, exc, job) or f'bad override: {first}'}",
              file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if outer is not None:  # initialize_config_module put back a copy of the cleared instance
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)
    return cfg


#: (job config, key) of a mapping whose entries the user names: ``key={...}`` replaces the default
#: mapping (``dopa robustness grids={mass_gain: {x: mass, y: gain}}``) where Hydra would merge into it
#: and refuse the new names; ``+key.<name>={...}`` adds an entry to the default one.
REPLACE_KEYS = {("robustness", "grids")}


def replace_overrides(config: str, overrides: list[str]) -> list[str]:
    """``overrides`` with each ``key=value`` of :data:`REPLACE_KEYS` as ``~key +key=value``."""
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        out += [f"~{key}", f"+{key}={value}"] if eq and (config, key) in REPLACE_KEYS else [o]
    return out


def _unknown_key(config: str, exc: BaseException, job: str | None) -> str | None:
    """One line for Hydra's "Could not override 'foo'": the key (the one inside a mapping value,
    ``env.x`` for ``env={x: 1}``), close matches among the config's keys, and where to see them
    (None for other errors)."""
    import difflib
    import re

    from omegaconf import OmegaConf

    m = re.match(r"Could not override '([^']+)'", str(exc))
    if not m:
        return None
    key = m.group(1)
    inner = re.search(r"full_key: (\S+)", str(exc.__cause__ or ""))
    if inner and inner.group(1).startswith(f"{key}."):
        key = inner.group(1)  # env={x: 1}: 'x' is the unknown key, not 'env'
    try:
        keys = _flat_keys(OmegaConf.to_container(compose(config, [], job)))
    except SystemExit:
        keys = []
    close = difflib.get_close_matches(key, keys, n=3)
    if close:  # most likely a typo: no "+key" hint, a job ignores keys it does not read
        return (f"unknown key {key!r}; did you mean {' or '.join(repr(k) for k in close)}? "
                f"('dopa {job or config} --help' lists the keys)")
    return f"unknown key {key!r} ('dopa {job or config} --help' lists the keys; +{key}=... adds a new one)"


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _flat_keys(v, f"{prefix}{k}.")
    return out


def _configs_folder():
    from importlib.resources import files

    return files("configs")


def group_choices(group: str) -> list[str] | None:
    """The choices of config group ``group``: the ``.yaml`` names in ``configs/<group>/``, sorted
    (None when there is no such group folder)."""
    folder = _configs_folder().joinpath(*group.split("/"))
    if not folder.is_dir():
        return None
    return sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _missing_choice(exc) -> str:
    """One line for Hydra's MissingConfigException: the group, the bad value, the choices."""
    missing = str(getattr(exc, "missing_cfg_file", None) or "")
    group, _, value = missing.rpartition("/")
    choices = group_choices(group) if group else None
    if choices is not None:
        return f"unknown {group} {value!r}; available {group} choices: {', '.join(choices)}"
    groups = sorted(p.name for p in _configs_folder().iterdir() if p.is_dir() and not p.name.startswith("_"))
    if group:
        return f"unknown config group {group!r} (in {missing!r}); config groups: {', '.join(groups)}"
    return f"unknown config {missing or str(exc).splitlines()[0]!r}"


def _user_error(exc: BaseException) -> BaseException | None:
    """The user-facing error behind ``exc`` (unwrapping Hydra's instantiation wrapper), or None
    when ``exc`` is a bug rather than bad input (then the traceback is shown)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    from sim.render import RenderingError  # lazy: sim loads MuJoCo; `dopa --help` does not

    user_types = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError,
                  NotADirectoryError, PermissionError, RenderingError, MissingMandatoryValue)
    seen = 0
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None and seen < 10:
        exc, seen = exc.__cause__, seen + 1
    if isinstance(exc, MissingMandatoryValue):
        return ValueError(f"{exc.full_key}=... is required (no default)")
    file_errors = ("SafetensorError", "PolicyFileError", "CheckpointError", "StateFileError")  # name their file
    if isinstance(exc, user_types) or type(exc).__name__ in file_errors:
        return exc
    return None


#: Config keys that name something a job writes (a file or a folder); checked before the job runs.
OUTPUT_KEYS = ("out", "run_dir", "log_dir", "video_dir", "text_cache", "prepare.data_dir")


def _kind(value) -> str | None:
    """'bool', 'int' or 'float' for a config default of that type, else None (not checked)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return None


def check_override_types(cfg, default, prefix: str = "") -> None:
    """Refuse a value whose type does not fit the key's default: ``n=abc`` where ``n: 50``. A
    single value given for a list key (``views=front``) becomes a one-item list (in ``cfg``).

    Args:
        cfg: the composed config (omegaconf.DictConfig).
        default: the same job's config composed without value overrides (only group choices).

    Raises:
        ValueError: ``"n must be an int (default 50), got 'abc'"``; for an int default a number
            with a fraction (``n=2.5``), for a float default a non-number, for a bool default
            anything but true/false. A null value, or a null default, is not checked (the job
            decides), nor is an int given where the default is a float.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    for key in default:
        if key not in cfg or OmegaConf.is_missing(default, key) or OmegaConf.is_missing(cfg, key):
            continue
        d, v = default[key], cfg[key]
        name = f"{prefix}{key}"
        if isinstance(d, DictConfig) and isinstance(v, DictConfig):
            check_override_types(v, d, prefix=f"{name}.")
            continue
        if isinstance(d, ListConfig) and isinstance(v, (str, int, float)) and not isinstance(v, bool):
            cfg[key] = [v]  # views=front means views=[front], not the letters of 'front'
            continue
        kind = _kind(d)
        if kind is None or v is None:
            continue
        if kind == "bool":
            ok = isinstance(v, bool)
        elif kind == "int":
            ok = (isinstance(v, int) and not isinstance(v, bool)) or (
                isinstance(v, float) and math.isfinite(v) and v == int(v))
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            allowed = {"bool": "true or false", "int": "an int", "float": "a number"}[kind]
            shown = str(d).lower() if kind == "bool" else repr(d)
            raise ValueError(f"{name} must be {allowed} (default {shown}), got {v!r}")


def check_output_path(key: str, path) -> None:
    """Refuse an output path the job could not write, before it runs (``out=/proc/x``,
    ``out=some_file/x.hdf5``): every existing ancestor must be a folder, and the nearest existing
    one must accept a new file (probed with a temporary file, removed at once).

    Raises:
        NotADirectoryError: an ancestor of ``path`` is a file.
        PermissionError: the nearest existing folder does not accept new files.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"{key}={path!r}: {parent!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dopa-probe-", dir=parent)
    except OSError as exc:
        raise PermissionError(f"{key}={path!r}: cannot create files in {parent!r} ({exc.strerror})") from None
    os.close(fd)
    os.remove(probe)


#: Keys that mean the same in every job that has them, and their smallest allowed int; checked
#: before the job runs (``dopa train num_envs=0`` fails before the main job builds its data).
INT_MINIMUMS = {"threads": 1, "seed": 0, "num_envs": 1, "total_steps": 1, "checkpoint_every": 1,
                "episodes": 1, "eval.episodes": 1, "eval.every": 0, "eval.seed": 0, "reward.query_every": 1}


#: (job config, key): a size range narrower than the renderer's [8, 1024] (``dopa import`` writes
#: files for the GRM, whose frames are 16 to 512 px: sim/importers.py, reward_models/grm.py)
SIZE_RANGES = {("import", "image_size"): (16, 512)}


#: Config nodes built from a typed config (``_target_`` names its class); each is checked by
#: instantiating that config before the job runs (:func:`jobs.build.check_config`).
TYPED_KEYS = ("env", "learner", "reward.potential", "adversary")


#: the typed potential config of ``reward=oracle``: it exists only for tasks whose simulator reports progress
ORACLE_TARGET = "reward_models.potential.OraclePotentialConfig"


def _check_reward(cfg) -> None:
    """``reward.scale`` a finite number > 0, and ``reward=oracle`` only with a task whose simulator
    reports its ground-truth progress (before the main job prepares anything).

    Raises:
        ValueError: ``reward.scale must be a finite number > 0, got -1``; ``task 'cartpole-swingup'
            has no ground-truth progress; tasks with it: lift, stack, pick-place-can, door``.
    """
    from omegaconf import OmegaConf

    from basics.checks import check_float  # lazy: basics.checks imports torch; `dopa --help` does not

    scale = OmegaConf.select(cfg, "reward.scale", default=None)
    if scale is not None:
        check_float("reward.scale", scale, 0.0, None, low_open=True)
    task = OmegaConf.select(cfg, "env.name", default=None)
    if OmegaConf.select(cfg, "reward.potential._target_", default=None) == ORACLE_TARGET and isinstance(task, str):
        from sim import check_has_progress  # lazy: sim imports MuJoCo; `dopa --help` needs neither

        check_has_progress(task, OmegaConf.select(cfg, "env.backend", default="cpu"))


def check_common(cfg, default, config: str | None = None) -> None:
    """The checks every job gets before it runs: value types against the defaults
    (:func:`check_override_types`), the keys of :data:`INT_MINIMUMS` (not where the job's default
    is null), ``image_size`` and the video sizes in [8, 1024] (narrower for ``config`` by
    :data:`SIZE_RANGES`),
    ``device`` a torch device this machine has, the typed configs of :data:`TYPED_KEYS` (env,
    learner, potential: their own range rules, e.g. ``reward.potential.fusion``), an adversary's
    protagonist and data (:func:`jobs.build.check_adversary`), the tracker's
    ``fusion`` / ``reward.fusion`` a known one, ``reward.checkpoint`` a GRM checkpoint when the
    potential loads it, output paths writable (:func:`check_output_path`, :data:`OUTPUT_KEYS`).

    Raises:
        ValueError, NotADirectoryError, PermissionError: one line naming the key and the value.
    """
    from omegaconf import OmegaConf

    if cfg.get("resume") in (None, False, True):  # a resumed run's stored config is its own base
        check_override_types(cfg, default)
    for key, minimum in INT_MINIMUMS.items():
        v = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.select(default, key, default=False) is None:
            continue  # a null default means something else here (dopa import episodes=[0,2]): the job checks it
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
            raise ValueError(f"{key} must be an int >= {minimum}, got {v!r}")
    for key in ("image_size", "video_size", "eval.video_size"):  # rendered pixels per side: sim.make_env's rule
        size = OmegaConf.select(cfg, key, default=None)
        lo, hi = SIZE_RANGES.get((config, key), (8, 1024))
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi):
            raise ValueError(f"{key} must be an int in [{lo}, {hi}], got {size!r}")
    device = cfg.get("device")
    if device is not None and str(device) != "cpu":
        import torch  # third-party, imported only when a device is named

        try:
            dev = torch.device(str(device))
            ok = dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                                       and (dev.index or 0) < torch.cuda.device_count())
        except RuntimeError:
            ok = False
        if not ok:
            have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            raise ValueError(f"device={str(device)!r} is not available here; available: {', '.join(have)}")
    # the typed configs validate their own values (sim.EnvConfig, control.<x>Config, the potential's)
    # lazy: jobs.build loads torch and the simulator; `dopa --help` needs neither
    from jobs.build import check_adversary, check_config

    for key in TYPED_KEYS:
        check_config(OmegaConf.select(cfg, key, default=None), key)
    if OmegaConf.select(cfg, "adversary._target_", default=None):  # train adversary=qarl: its learner and data
        check_adversary(cfg)
    absent = object()
    for key in ("fusion", "reward.fusion"):  # the tracker's, in configs without a typed potential (reward-*, deploy)
        fusion = OmegaConf.select(cfg, key, default=absent)
        if fusion is not absent:
            # lazy: the tracker loads torch; `dopa --help` does not
            from reward_models.tracker import check_fusion

            check_fusion(fusion, key)
    # train reward=grm|naive: the potential loads ${reward.checkpoint} (a custom potential may not)
    grm = OmegaConf.select(cfg, "reward.potential.checkpoint", default=None)
    if isinstance(grm, str) and grm and grm == OmegaConf.select(cfg, "reward.checkpoint", default=None):
        from reward_models.grm import check_grm_checkpoint  # lazy: the GRM module loads torch

        check_grm_checkpoint(grm, key="reward.checkpoint")
    _check_reward(cfg)
    if OmegaConf.select(cfg, "distributed.nproc", default=None) is not None:  # reward-train's ranks
        module_name, func_name = DISTRIBUTED_CHECK.split(":")  # imported only when the key is there
        getattr(importlib.import_module(module_name), func_name)(cfg)
    for key in OUTPUT_KEYS:
        if key == "out" and cfg.get("render") is False:  # dopa tasks writes out only when rendering
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value:
            check_output_path(key, value)
        elif value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a path or null, got {value!r}")


def _group_overrides(overrides: list[str]) -> list[str]:
    """The overrides that pick a config group (``env=lift``, ``robot=ur5e``), not values."""
    groups = {p.name for p in _configs_folder().iterdir() if p.is_dir() and not p.name.startswith("_")}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in groups]


_TERMINATED: list[int] = []  # the SIGTERMs received while a job runs


def split_ros_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ROS 2 arguments off a job's words, as ``ros2 run`` takes them: each ``--ros-args``
    block runs to the next ``--`` (dropped) or to the end.

    Returns:
        ``(the other words, the ROS 2 words, each block starting with --ros-args)``.
    """
    rest, ros = [], []
    i = 0
    while i < len(args):
        if args[i] != "--ros-args":
            rest.append(args[i])
            i += 1
            continue
        j = args.index("--", i) if "--" in args[i:] else len(args)
        ros += args[i:j]
        i = j + 1
    return rest, ros


def _raise_keyboard_interrupt(signum, frame):
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"dopa: unknown job {name!r}; known jobs: {', '.join(JOBS)}", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    job = JOBS[name]
    module_name, func_name = job.target.split(":")
    rest, ros_args = split_ros_args(rest)
    if any(a in ("-h", "--help") for a in rest):
        from omegaconf import OmegaConf

        module = importlib.import_module(module_name)
        doc = (getattr(module, func_name).__doc__ or job.summary).strip()
        print(f"dopa {name}: {doc}\n\ndefault config (override with key=value):\n")
        print(OmegaConf.to_yaml(compose(job.config, [])))
        return 0
    if any(a in ("-m", "--multirun") for a in rest):  # a sweep: jobs/multirun.py, any job of JOBS
        module_name, func_name = MULTIRUN.split(":")  # imported as the jobs are: only when used
        return getattr(importlib.import_module(module_name), func_name)(name, job, rest)
    if job.composer:  # e.g. dopa train resume=...: the run's stored config is the base
        comp_module, comp_func = job.composer.split(":")
        try:
            cfg = getattr(importlib.import_module(comp_module), comp_func)(rest)
        except ValueError as exc:
            print(f"dopa {name}: error: {exc}", file=sys.stderr)
            return 2
    else:
        cfg = compose(job.config, rest, job=name)
    if ros_args:  # the ROS 2 jobs pass them to rclpy.init (their config key ros_args)
        if "ros_args" not in cfg:
            print(f"dopa {name}: error: --ros-args is for the ROS 2 jobs (deploy, sim-robot), not {name}", file=sys.stderr)
            return 2
        cfg.ros_args = [*cfg.ros_args, *ros_args]
    try:
        check_common(cfg, compose(job.config, _group_overrides(rest), job=name), job.config)
    except (ValueError, OSError) as exc:
        print(f"dopa {name}: error: {exc}", file=sys.stderr)
        return 1
    module = importlib.import_module(module_name)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so temporary files are removed on the way out.
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main else None
    _TERMINATED.clear()
    try:
        result = getattr(module, func_name)(cfg)
    except KeyboardInterrupt:
        print(f"dopa {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _TERMINATED:  # an interrupt raised inside compiled code comes back wrapped (SystemError)
            print(f"dopa {name}: interrupted", file=sys.stderr)
            return 130
        # Bad input from the user: one clear line, no traceback (DOPA_DEBUG=1 shows it).
        user_error = _user_error(exc)
        if user_error is None or os.environ.get("DOPA_DEBUG"):
            raise
        print(f"dopa {name}: error: {user_error}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
    return int(result or 0)


def entry() -> int:
    """Console-script entry point: ``main`` plus quiet handling of a closed stdout (``| head``)."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(entry())
