"""The one training loop (``dopa train env=... learner=... reward=sparse|dense|grm|naive``).

Every learner (SAC, PPO, GoRL, EXPO, ...) runs here; Hydra builds the pieces:

- env: ``sim.make_env(cfg.env.name, cfg.num_envs, views, cfg.env.image_size, cfg.seed, **cfg.env.kwargs)``;
- learner: ``hydra.utils.instantiate(cfg.learner, obs_dim, action_dim, num_envs, seed, device)``
  (+ ``offline_data=[paths]`` when ``cfg.offline_data`` is set and the learner accepts it);
- reward: :class:`reward_models.shaping.RewardShaper` with ``cfg.reward.mode``; the potential (the
  GRM progress tracker for ``reward=grm``) from ``hydra.utils.instantiate(cfg.reward.potential)``.
  Views are rendered only when the potential needs them: with ``query_every = 1`` the env returns
  them with every observation (final frames included), otherwise ``env.render(views)`` runs on
  query steps and when an episode ends, and the shaper holds Phi in between.

Per step: ``act -> env.step -> shaping -> observe -> update``. Logged: a tqdm bar with live episode
return and success; TensorBoard (``<run>/tb``) with the whole config as text and hparams, each
reward term as its own scalar (``reward/task``, ``reward/shaping``, ``reward/gold``,
``reward/progress``, ``reward/total``), learner metrics and periodic evaluation (success rate with
its Wilson interval, return with its t interval; :func:`control.evaluate.evaluate`).

Run folder: ``runs/<env>__<learner>__<reward>__seed<seed>__<time>/{checkpoints, tb, videos, eval.jsonl}``.

Checkpoints and exact resume: every ``checkpoint_every`` env steps (and at the end) the loop cuts
all episodes (a running episode counts as *truncated*, so learners bootstrap through the cut),
resets every env with a seed derived from (``seed``, step) and writes a checkpoint
(:mod:`control.checkpoint`). ``resume=<checkpoint or run folder>`` loads it and resets the envs
with the same derived seed, so on CPU the run continues bit for bit: the weights after N steps
equal those of an uninterrupted run with the same seed (given checkpoint steps at the same places).
On resume the run's own stored config is the base (:func:`compose_config`): overrides given with
``resume=`` apply only to :data:`RESUME_MAY_CHANGE` keys; any other change is refused, naming the
key, its stored and its given value.

What the loop uses from a learner, beyond the :class:`control.learner.Learner` contract (all
optional): ``gamma`` (the shaping discount; else ``cfg.reward.gamma``, else 0.99);
``networks() -> {name: nn.Module}`` (weights stored in ``pretrained_model/``; without it only
``training_state/`` holds them); ``export_policy() -> (module, meta entries)`` (the ``deploy/``
policy; ``meta`` needs at least ``kind``); ``torch.Generator`` attributes (their states are
restored after each evaluation so evaluating never changes training); ``offline_data`` in the
constructor (passed when ``cfg.offline_data`` is set); ``extra_env_steps()`` (reported with the
loop's own count).
"""

from __future__ import annotations

import datetime
import fnmatch
import inspect
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

#: Config keys that may differ between a checkpoint and the run resuming it (fnmatch patterns):
#: the run's length, its evaluation / logging / checkpoint cadence, where it writes, and display.
RESUME_MAY_CHANGE = ("total_steps", "learner.total_steps", "resume", "run_dir", "eval.*", "progress",
                     "log_every", "threads", "checkpoint_every", "checkpoint_keep")

#: Stored keys that follow another key on resume (configs/learner/ppo.yaml: ``total_steps: ${total_steps}``):
#: when the stored value equals the source's stored value, a new source value carries over.
RESUME_FOLLOWS = {"learner.total_steps": "total_steps"}


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

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
    import copy

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


def compose_config(overrides: list[str]):
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
            corrupt checkpoint is reported by :func:`train`.
    """
    from omegaconf import OmegaConf

    from control.checkpoint import CheckpointError, load_checkpoint
    from jobs.cli import compose

    cfg = compose("train", overrides)
    if not cfg.get("resume"):
        return cfg
    try:
        ckpt = load_checkpoint(cfg.resume)
    except CheckpointError:
        return cfg  # train() names the bad path
    given = OmegaConf.to_container(cfg, resolve=True)
    defaults = OmegaConf.to_container(compose("train", []), resolve=True)
    merged = OmegaConf.create(resume_config(ckpt.config, given, given_keys(overrides, defaults, given)))
    OmegaConf.set_struct(merged, True)
    return merged


def episode_seed(seed: int, step: int) -> int:
    """Seed for resetting all envs at loop step ``step`` (checkpoint boundaries)."""
    return int(seed) * 1_000_003 + int(step) + 1


def build_env(cfg, views=(), num_envs: int | None = None, seed: int | None = None):
    import sim

    kwargs = dict(cfg.env.get("kwargs") or {})
    backend = kwargs.pop("backend", cfg.env.get("backend", "cpu"))
    if backend == "warp":  # all envs are worlds of one MuJoCo Warp simulation on the learner's device
        kwargs.setdefault("device", cfg.get("device"))
    else:
        kwargs["vectorization"] = cfg.env.get("vectorization", "sync")
    return sim.make_env(cfg.env.name, num_envs=int(num_envs or cfg.num_envs), views=tuple(views),
                        image_size=int(cfg.env.image_size), seed=int(cfg.seed if seed is None else seed),
                        backend=backend, **kwargs)


def _accepts(target: str, name: str) -> bool:
    from hydra.utils import get_object

    try:
        sig = inspect.signature(get_object(target))
    except (ValueError, TypeError):
        return False
    return name in sig.parameters or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def build_learner(cfg, env, device: str = "cpu"):
    """``hydra.utils.instantiate(cfg.learner, obs_dim, action_dim, num_envs, seed, device)`` (+ ``offline_data``)."""
    from hydra.utils import instantiate

    kw = dict(obs_dim=int(env.state_dim), action_dim=int(env.action_dim), num_envs=int(env.num_envs),
              seed=int(cfg.seed), device=device)
    offline = list(cfg.get("offline_data") or [])
    if offline:
        if not _accepts(cfg.learner._target_, "offline_data"):
            raise ValueError(f"offline_data was given but learner {cfg.learner._target_} takes no offline_data")
        kw["offline_data"] = offline
    return instantiate(cfg.learner, **kw)


def build_shaper(cfg, env, learner):
    """The reward shaper of ``cfg.reward``; gamma = the learner's discount (``learner.gamma``)."""
    from hydra.utils import instantiate

    from reward_models.shaping import RewardShaper

    r = cfg.reward
    gamma = getattr(learner, "gamma", None) or r.get("gamma") or 0.99
    potential = None
    if r.get("potential") is not None and (r.mode in ("potential", "naive") or r.gold == "potential"):
        extra = {}
        for key, val in (("task", env.task), ("num_envs", env.num_envs)):
            if key not in r.potential and _accepts(r.potential._target_, key):
                extra[key] = val
        potential = instantiate(r.potential, **extra)
    return RewardShaper(r.mode, float(gamma), potential, gold=r.gold, gold_scale=float(r.get("gold_scale", 1.0)),
                        query_every=int(r.get("query_every", 1)))


def _run_name(cfg, learner) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    reward = cfg.reward.get("name") or cfg.reward.mode
    return f"{cfg.env.name}__{getattr(learner, 'name', 'learner')}__{reward}__seed{cfg.seed}__{stamp}"


class _NullBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def train(cfg) -> dict:
    """Run training as configured; returns a summary dict (run dir, steps, last evaluation, checkpoints).

    Raises:
        ValueError: bad config values (named), a resume with changed fixed keys, a checkpoint that
            does not fit the env. control.checkpoint.CheckpointError: missing or corrupt checkpoint.
    """
    from omegaconf import OmegaConf

    from control.checkpoint import (
        check_env_compatible,
        load_checkpoint,
        load_networks,
        save_checkpoint,
        set_rng_state,
    )
    from control.evaluate import evaluate, format_result, learner_policy
    from control.export import policy_meta
    from control.learner import Transition

    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("total_steps", "num_envs", "checkpoint_every"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be an int >= 1, got {v!r}")
    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed) % 2**32)
    random.seed(int(cfg.seed))

    ckpt = None
    if cfg.get("resume"):
        ckpt = load_checkpoint(cfg.resume)

    B = int(cfg.num_envs)
    probe = build_env(cfg)
    try:
        if ckpt is not None:
            check_env_compatible(ckpt, probe)
            check_resume_config(ckpt.config, config)
        learner = build_learner(cfg, probe, cfg.get("device", "cpu"))
        shaper = build_shaper(cfg, probe, learner)
    except BaseException:
        probe.close()
        raise
    views = shaper.views if shaper.uses_potential else ()
    render_each_step = bool(views) and shaper.query_every == 1
    if render_each_step:
        probe.close()
        env = build_env(cfg, views=views)
    else:
        env = probe
    env_info = {"task": env.task, "state_dim": env.state_dim, "action_dim": env.action_dim,
                "state_layout": [[k, n] for k, n in env.state_layout]}

    loop_steps = math.ceil(int(cfg.total_steps) / B)
    ckpt_every = max(1, int(cfg.checkpoint_every) // B)
    eval_every = max(1, int(cfg.eval.every) // B) if cfg.eval.get("every") else 0
    log_every = max(1, int(cfg.get("log_every", 1000)) // B)
    step = 0
    history: list[dict] = []
    if ckpt is not None:
        if cfg.get("run_dir"):
            run_dir = Path(cfg.run_dir)
        elif ckpt.path.parent.name == "checkpoints":
            run_dir = ckpt.path.parent.parent  # continue in the checkpoint's own run folder
        else:
            run_dir = Path("runs") / _run_name(cfg, learner)
        load_networks(learner, ckpt.networks(), str(ckpt.path))
        learner.load_state_dict(ckpt.training_state("learner"))
        shaper.load_state_dict(ckpt.training_state("shaping"))
        loop_state = ckpt.training_state("loop")
        step = int(loop_state["step"])
        history = list(loop_state.get("history", []))
        set_rng_state(loop_state["rng"])
    else:
        run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else Path("runs") / _run_name(cfg, learner)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    tmp_cfg = run_dir / f".config.json.{os.getpid()}"
    tmp_cfg.write_text(json.dumps(config, indent=2))
    os.replace(tmp_cfg, run_dir / "config.json")

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step * B if ckpt is not None else None)
    if ckpt is None:
        writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```", 0)
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat_config(config).items()}
        writer.add_hparams(flat, {}, run_name=".")

    eval_env = None

    def run_eval(at_step: int) -> dict:
        nonlocal eval_env
        if eval_env is None:
            eval_env = build_env(cfg, num_envs=int(cfg.eval.episodes), seed=int(cfg.eval.seed))
        # evaluation must not change the training random streams (the learner's own generators too)
        gens = {k: g.get_state() for k, g in vars(learner).items() if isinstance(g, torch.Generator)}
        with torch.random.fork_rng(devices=[]):
            video = run_dir / "videos" / f"step_{at_step * B:09d}.mp4" if cfg.eval.get("video") else None
            res = evaluate(eval_env, learner_policy(learner), int(cfg.eval.seed), video_path=video,
                           video_view=cfg.eval.get("video_view"), video_size=cfg.eval.get("video_size"))
        for k, st in gens.items():
            getattr(learner, k).set_state(st)
        res["env_steps"] = at_step * B
        env_steps = at_step * B
        writer.add_scalar("eval/success_rate", res["success_rate"], env_steps)
        writer.add_scalar("eval/success_ci_low", res["success_ci"][0], env_steps)
        writer.add_scalar("eval/success_ci_high", res["success_ci"][1], env_steps)
        writer.add_scalar("eval/return_mean", res["return_mean"], env_steps)
        writer.add_scalar("eval/return_ci_low", res["return_ci"][0], env_steps)
        writer.add_scalar("eval/return_ci_high", res["return_ci"][1], env_steps)
        with open(run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return res

    def write_checkpoint(at_step: int) -> Path:
        deploy = None
        if hasattr(learner, "export_policy"):
            module, extra = learner.export_policy()
            meta = policy_meta(env, extra["kind"], extra.get("action_horizon", 1), extra.get("views", ()),
                               extra.get("obs_normalizer"))
            meta.update({k: v for k, v in extra.items() if k not in meta})
            deploy = (module, meta)
        path = run_dir / "checkpoints" / f"step_{at_step * B:09d}"
        save_checkpoint(path, learner=learner, config=config, env_info=env_info, step=at_step,
                        env_steps=at_step * B, loop_state={"step": at_step, "history": history},
                        shaping_state=shaper.state_dict(), deploy=deploy)
        keep = int(cfg.get("checkpoint_keep", 0) or 0)
        if keep > 0:
            import shutil

            old = sorted((run_dir / "checkpoints").glob("step_*"))[:-keep]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        return path

    # ----- start -------------------------------------------------------------------------------
    obs, _ = env.reset(seed=episode_seed(cfg.seed, step))

    def with_images(o: dict) -> dict:
        if views and "images" not in o:
            return {"state": o["state"], "images": env.render(views)}
        return o

    if ckpt is None:
        shaper.start(with_images(obs))
    elif shaper.uses_potential:
        shaper.resume(with_images(obs))

    from tqdm.auto import tqdm

    bar = tqdm(total=loop_steps * B, initial=step * B, unit="step", dynamic_ncols=True,
               desc=f"train {env.task}") if cfg.get("progress", True) else _NullBar()
    ep_return = torch.zeros(B, dtype=torch.float64)
    ep_shaped = torch.zeros(B, dtype=torch.float64)
    ep_success = torch.zeros(B, dtype=torch.bool)
    recent: list[tuple[float, float, bool]] = []
    term_sums: dict[str, float] = {}
    term_count = 0
    last_eval = history[-1] if history else None
    metrics: dict[str, float] = {}
    checkpoints: list[str] = []
    t0, steps_at_t0 = time.time(), step
    try:
        while step < loop_steps:
            action = learner.act(obs["state"])
            next_obs, reward_env, terminated, truncated, info = env.step(action)
            final = info.get("final_obs", next_obs)
            step += 1
            boundary = step % ckpt_every == 0 or step == loop_steps
            if boundary:  # cut every episode here (a truncation) so checkpoints sit on episode starts
                truncated = truncated | ~terminated
                next_obs, _ = env.reset(seed=episode_seed(cfg.seed, step))
            done = terminated | truncated
            hold = None
            if views and not render_each_step and (shaper.query_due() or bool(done.any())):
                imgs = env.render(views)  # current states: s' for running envs, first states for reset ones
                final = {"state": final["state"], "images": imgs}
                next_obs = {"state": next_obs["state"], "images": imgs}
                hold = done.clone()  # their final frames were not rendered: hold Phi for them
            reward, terms = shaper.step(reward_env, final, terminated, truncated, info["success"],
                                        reset_obs=next_obs, hold=hold)
            learner.observe(Transition(obs["state"], action, reward, final["state"], terminated, truncated,
                                       info={"reward_terms": terms}))
            m = learner.update()
            if m:
                metrics = m
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v.mean())
            term_count += 1
            ep_return += reward_env.double()
            ep_shaped += reward.double()
            ep_success |= info["success"]
            for i in torch.nonzero(done).flatten().tolist():
                recent.append((float(ep_return[i]), float(ep_shaped[i]), bool(ep_success[i])))
                ep_return[i], ep_shaped[i], ep_success[i] = 0.0, 0.0, False
            recent = recent[-20:]
            obs = next_obs
            bar.update(B)
            env_steps = step * B
            if step % log_every == 0 or step == loop_steps:
                for k, v in term_sums.items():
                    writer.add_scalar(f"reward/{'total' if k == 'reward' else k}", v / max(1, term_count), env_steps)
                term_sums, term_count = {}, 0
                for k, v in metrics.items():
                    writer.add_scalar(f"learner/{k}", v, env_steps)
                if recent:
                    writer.add_scalar("train/episode_return", float(np.mean([r[0] for r in recent])), env_steps)
                    writer.add_scalar("train/episode_shaped_return", float(np.mean([r[1] for r in recent])), env_steps)
                    writer.add_scalar("train/success_rate", float(np.mean([r[2] for r in recent])), env_steps)
                sps = (step - steps_at_t0) * B / max(1e-9, time.time() - t0)
                writer.add_scalar("train/steps_per_second", sps, env_steps)
                if learner.extra_env_steps():
                    writer.add_scalar("train/extra_env_steps", learner.extra_env_steps(), env_steps)
                post = {"ret": f"{np.mean([r[0] for r in recent]):.1f}" if recent else "-",
                        "succ": f"{np.mean([r[2] for r in recent]):.2f}" if recent else "-"}
                if last_eval:
                    post["eval_succ"] = f"{last_eval['success_rate']:.2f}"
                bar.set_postfix(**post)
            if boundary:
                checkpoints.append(str(write_checkpoint(step)))
            if eval_every and (step % eval_every == 0 or step == loop_steps):
                last_eval = run_eval(step)
                history.append({k: last_eval[k] for k in ("env_steps", "success_rate", "success_ci",
                                                         "return_mean", "return_ci")})
                tqdm.write(f"[{env_steps} steps] eval: {format_result(last_eval)}") if cfg.get("progress", True) \
                    else None
    finally:
        bar.close()
        writer.flush()
        writer.close()
        env.close()
        if eval_env is not None:
            eval_env.close()
    return {"run_dir": str(run_dir), "steps": step, "env_steps": step * B,
            "extra_env_steps": int(learner.extra_env_steps()), "last_eval": last_eval,
            "checkpoints": checkpoints, "learner": learner}


def run(cfg) -> int:
    """Train a policy in simulation: ``dopa train env=<task> learner=<sac|ppo|...> reward=<sparse|dense|grm|naive>``.

    With no overrides: the main job (EXPO on Lift, reward shaped by a GRM pretrained on other tasks
    and adapted to Lift from one demonstration); ``preset=default|quick|none`` sets its size, and
    :func:`jobs.prepare.prepare` finds or builds the demonstrations and GRMs under
    ``prepare.data_dir`` first.

    Writes ``runs/<env>__<learner>__<reward>__seed<seed>__<time>/`` (checkpoints, TensorBoard, videos,
    eval.jsonl). ``resume=<checkpoint or run folder>`` continues a run exactly, as it was configured
    (its stored config; only total_steps and the evaluation / logging / checkpoint cadence may be
    changed alongside).
    """
    from control.checkpoint import CheckpointError
    from jobs.prepare import prepare

    try:
        cfg = prepare(cfg)  # the main job's demos and GRM, found or built (jobs/prepare.py)
        out = train(cfg)
    except (CheckpointError, ValueError) as exc:
        raise SystemExit(f"dopa train: {exc}") from None
    run_dir = Path(out["run_dir"])
    print(f"dopa train: {out['env_steps']} env steps -> {run_dir}")
    if out["checkpoints"]:
        newest = Path(out["checkpoints"][-1])
        deploy = f"; deployment policy {newest / 'deploy'}" if (newest / "deploy").is_dir() else ""
        print(f"  checkpoints: {run_dir / 'checkpoints'} (newest {newest.name}{deploy})")
    print(f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    print(f"  videos: {run_dir / 'videos'} ({len(videos)} MP4)" if videos else "  videos: none (eval.video=true records them)")
    if out["last_eval"]:
        from control.evaluate import format_result

        if "episodes" in out["last_eval"]:
            print(f"last evaluation: {format_result(out['last_eval'])}")
    return 0
