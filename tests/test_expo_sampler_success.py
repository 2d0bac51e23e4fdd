"""benchmarks/expo_sampler_success.py: variant names, checkpoint labels and the paired comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.expo_sampler_success import label, paired, parse_variant


def test_variants_parse_and_bad_names_are_refused_by_name():
    assert parse_variant("ddpm10") == {}
    assert parse_variant("ddim5") == {"sampler": "ddim", "sample_steps": 5}
    for bad in ("ddim0", "ddim", "ddpm5", "euler3"):
        with pytest.raises(ValueError, match=f"unknown variant '{bad}'; allowed: ddpm10"):
            parse_variant(bad)


def test_label_names_group_run_and_step(tmp_path):
    ckpt = tmp_path / "runs" / "shaping_vs_sparse" / "g1" / "sparse_seed3" / "checkpoints" / "step_000020000"
    ckpt.mkdir(parents=True)
    assert label(ckpt) == "g1_sparse_seed3_step_000020000"
    assert label(Path(tmp_path)) == tmp_path.name  # not a run's checkpoint: its own name


def test_paired_difference_counts_discordant_pairs_and_tests_them():
    base = np.array([True] * 30 + [False] * 10)
    same = paired(base, base.copy(), np.random.default_rng(0))
    assert same["difference"] == 0 and same["difference_ci"] == [0.0, 0.0] and same["sign_test_p"] == 1.0
    assert same["equivalent"]
    worse = base.copy()
    worse[:12] = False  # 12 episodes only the reference solved
    r = paired(base, worse, np.random.default_rng(0))
    assert r["only_base_succeeded"] == 12 and r["only_variant_succeeded"] == 0
    assert r["difference"] == pytest.approx(-0.3) and r["difference_ci"][1] < 0
    assert r["sign_test_p"] < 0.001 and not r["equivalent"]
