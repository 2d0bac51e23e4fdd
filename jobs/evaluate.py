"""``dopa eval checkpoint=<dir>``: evaluate a checkpoint with the routine training uses
(:func:`control.evaluate.evaluate`), on a fixed list of seeds."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf

from basics.artefacts import GRM_CHECKPOINT, what_is
from basics.atomic import check_json_path, write_json
from basics.checks import check_seed
from control.checkpoint import CheckpointError, check_env_compatible, load_checkpoint, load_networks
from control.evaluate import deploy_policy, evaluate, format_result, learner_policy
from control.export import load_policy, sampling_overrides
from jobs.build import build_env, build_learner


def _open_checkpoint(path):
    """The policy checkpoint at ``path``; a GRM checkpoint is named as such.

    Raises:
        FileNotFoundError: not a checkpoint or run folder (the loader's message), or a GRM checkpoint.
    """
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        if what_is(path) != GRM_CHECKPOINT:
            raise FileNotFoundError(str(exc)) from None
        raise FileNotFoundError(f"checkpoint={str(path)!r} is a GRM (reward model) checkpoint, not a policy "
                                "checkpoint or run; dopa reward-eval checkpoint=... data=[...] evaluates it") from None


def load_learner(ckpt, env):
    """The checkpoint's WHOLE learner: rebuilt from its stored config for the training run's
    ``num_envs`` and ``env``'s state and action sizes, then its network weights and its training
    state (``training_state/learner``: normalisers, GoRL's stage and decoder, EXPO's generators,
    ...) loaded, as a resumed run restores it (:meth:`control.train.Start.restore`).

    Raises:
        control.checkpoint.CheckpointError: a missing or corrupt file, NaN/inf weights (named).
        ValueError: weights that do not fit the rebuilt learner (names and shapes named).
    """
    stored = OmegaConf.create(ckpt.config)
    num_envs = stored.get("num_envs")
    shape = SimpleNamespace(task=env.task, state_dim=int(env.state_dim), action_dim=int(env.action_dim),
                            num_envs=int(num_envs) if isinstance(num_envs, int) and num_envs >= 1 else int(env.num_envs))
    kw = {"adversary": stored.get("adversary")} if stored.get("adversary") is not None else {}
    learner = build_learner(stored.learner, shape, seed=int(stored.seed), device="cpu",
                            offline_data=list(stored.get("offline_data") or []), **kw)
    load_networks(learner, ckpt.networks(), str(ckpt.path))
    learner.load_state_dict(ckpt.training_state("learner"))
    return learner


def _learner_fn(ckpt, env):
    """The deterministic policy of the checkpoint's whole learner (:func:`load_learner`)."""
    return learner_policy(load_learner(ckpt, env))


def run(cfg: DictConfig) -> int:
    """Evaluate a checkpoint on a fixed list of seeds (the same routine as training's evaluation).

    Config (``configs/eval.yaml``): ``checkpoint`` (a checkpoint or run folder), ``policy``
    (``deploy``: the exported deployment policy; ``learner``: rebuild the learner), ``episodes``,
    ``seed``, ``video``, ``video_view``, ``out`` (JSON path, its folders created; default
    ``<checkpoint>/eval.json``; with a sampler override ``eval_<sampler><sample_steps>.json``, e.g.
    ``eval_ddim5.json``, the video likewise), ``threads`` (torch threads), ``sampler`` /
    ``sample_steps`` (``policy=deploy``, EXPO: draw the exported policy with ``ddim`` over fewer
    denoising steps; null: as exported), ``env`` overrides of the checkpoint's env config (``null``:
    the checkpoint's own).

    Raises:
        IsADirectoryError: ``out`` is a folder (checked before any episode runs).
        FileNotFoundError: ``checkpoint`` is not a checkpoint or run folder; a GRM checkpoint is
            named as such (``dopa reward-eval`` takes it).
    """
    if cfg.checkpoint is None:
        raise SystemExit("dopa eval: set checkpoint=<checkpoint or run folder>")
    if cfg.get("out"):
        check_json_path(cfg.out, key="out")  # before any episode runs
    ckpt = _open_checkpoint(cfg.checkpoint)
    sampling = sampling_overrides(cfg)
    # another sampler's result goes beside the exported one's, not over it
    stem = "eval_" + re.sub(r"[^A-Za-z0-9]", "", "".join(str(v) for v in sampling.values())) if sampling else "eval"
    out = Path(cfg.out) if cfg.get("out") else ckpt.path / f"{stem}.json"
    check_json_path(out, key="out")
    if not isinstance(ckpt.config, dict) or "env" not in ckpt.config:
        raise ValueError(f"checkpoint={str(cfg.checkpoint)!r} stores no run config with an env (written by "
                         "control.train.train with Checkpoints(config={})?); dopa eval rebuilds the env from it. "
                         "Pass the run's config to Checkpoints(config=...) when you call the loop yourself")
    env_cfg = ckpt.config["env"]
    if cfg.get("env") is not None:  # deep merge: +env.kwargs.max_episode_steps=100 keeps the other kwargs
        env_cfg = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(env_cfg), cfg.env), resolve=True)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    if cfg.policy not in ("deploy", "learner"):
        raise SystemExit(f"dopa eval: error: unknown policy {cfg.policy!r}; known: deploy, learner")
    if sampling and cfg.policy != "deploy":
        raise ValueError(f"{', '.join(f'{k}={v}' for k, v in sampling.items())} "
                         f"{'applies' if len(sampling) == 1 else 'apply'} to policy=deploy "
                         f"(the exported policy), got policy={cfg.policy}")
    pol = load_policy(ckpt.path / "deploy", sampling) if cfg.policy == "deploy" else None
    if int(cfg.episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {cfg.episodes}")
    check_seed(cfg.seed, count=int(cfg.episodes))
    env = build_env(env_cfg, num_envs=int(cfg.episodes), views=pol.views if pol else (), seed=int(cfg.seed))
    try:
        check_env_compatible(ckpt, env)
        fn = deploy_policy(pol) if pol is not None else _learner_fn(ckpt, env)
        video = (ckpt.path / f"{stem}.mp4") if cfg.video else None
        result = evaluate(env, fn, int(cfg.seed), video_path=video, video_view=cfg.get("video_view"),
                          video_size=cfg.get("video_size"))
    finally:
        env.close()
    result.update(checkpoint=str(ckpt.path), policy=cfg.policy, step=ckpt.info.get("env_steps"))
    if sampling:
        result["sampling"] = sampling
    write_json(out, result)
    print(f"dopa eval {ckpt.path}: {format_result(result)} -> {out}")
    return 0
