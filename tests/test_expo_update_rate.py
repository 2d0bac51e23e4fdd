"""The EXPO update-rate benchmark (benchmarks/expo_update_rate.py) at tiny size: real EXPO learners per
sampler variant, measured in alternating rounds, ratios against ddpm10, JSON + PNG; bad variants and
counts refused with the allowed values."""

import json

import pytest

import benchmarks.expo_update_rate as eur

TINY = ["--rounds", "2", "--updates", "2", "--rounds-per-variant", "1", "--obs-dim", "12", "--action-dim", "3",
        "learner.batch_size=8", "learner.base_hidden_dim=16", "learner.critic_hidden_dims=[16,16]",
        "learner.edit_hidden_dims=[16,16]", "learner.num_qs=2", "learner.time_dim=8"]


def test_variants_are_measured_side_by_side_with_ratios(tmp_path, capsys):
    assert eur.main([*TINY, "--variants", "ddim5", "ddim2", "--results-dir", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "expo_update_rate.json").read_text())
    m = out["metrics"]
    # ddpm10, the reference, is measured even when not asked for
    assert list(m["per_round"]["critic_updates_per_s"]) == ["ddpm10", "ddim5", "ddim2"]
    for v in ("ddpm10", "ddim5", "ddim2"):
        assert len(m["per_round"]["critic_updates_per_s"][v]) == 2 and m[f"{v}_critic_updates_per_s"] > 0
        assert m[f"{v}_update_rounds_per_s"] > 0
    for v in ("ddim5", "ddim2"):
        lo, hi = m[f"{v}_over_ddpm10_critic_updates_ci"]
        assert lo <= m[f"{v}_over_ddpm10_critic_updates"] <= hi
    assert set(out["targets"]) == {"ddim5_over_ddpm10_critic_updates", "ddim2_over_ddpm10_critic_updates"}
    assert m["setting"]["diffusion_steps"] == 10 and m["setting"]["batch_size"] == 8
    assert (tmp_path / "expo_update_rate.png").stat().st_size > 0
    assert "ddim5_over_ddpm10_critic_updates" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (["--variants", "ddim"], "unknown variant 'ddim'; allowed: ddpm10, ddim<k>"),
    (["--variants", "ddpm5"], "unknown variant 'ddpm5'"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--variants", "ddim20"], "variant ddim20: sample_steps must be in [1, diffusion_steps=10], got 20"),
])
def test_bad_input_is_refused_naming_what_is_allowed(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exc:
        eur.main([*TINY, *bad, "--results-dir", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "expo_update_rate.json").exists()
