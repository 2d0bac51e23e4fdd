"""The Qwen2.5-VL GRM backend: score parsing, prompt/image plumbing and the tracker, with a tiny
randomly initialised Qwen2.5-VL built from a config here (no download). The tokenizer is a
byte-level BPE without merges plus the Qwen chat/vision special tokens, so any answer text
round-trips exactly."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from reward_models.qwen import QwenGRMBackend, ScoreParseError, default_slots, parse_score, parse_score_strict  # noqa: E402
from reward_models.tracker import ProgressTracker  # noqa: E402

VIEWS = ("front", "wrist")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]


@pytest.mark.parametrize("text,value", [
    ("<score>+12.5%</score>", 0.125), ("<score>-40%</score>", -0.4), ("<score>0%</score>", 0.0),
    ("<score>+100%</score>", 1.0), ("<score>-100.0%</score>", -1.0), ("answer: <SCORE> + 7 % </score>\n", 0.07),
    ("<score>33.3%</score>", 0.333), ("<score>+5%</score> <score>+5%</score>", 0.05),
])
def test_parse_score(text, value):
    assert parse_score(text) == pytest.approx(value)
    assert parse_score_strict(text) == pytest.approx(value)


@pytest.mark.parametrize("text,reason", [
    ("", "no <score>"), ("+12%", "no <score>"), ("<score>+12.5</score>", "malformed"),
    ("<score>abc%</score>", "malformed"), ("<score>+150%</score>", "outside"),
    ("<score>+5%</score><score>-5%</score>", "several different"), ("<score>+12%", "no <score>"),
])
def test_parse_score_failures_are_explicit(text, reason):
    assert parse_score(text) is None  # never a silent 0
    with pytest.raises(ScoreParseError, match=reason) as e:
        parse_score_strict(text)
    assert e.value.answer == text


def test_default_slots_repeat_front():
    assert default_slots(("front",)) == ("front", "front", "front")
    assert default_slots(("front", "wrist")) == ("front", "wrist", "front")
    assert default_slots(("front", "wrist", "side")) == ("front", "wrist", "side")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder (model, tokenizer, image processor)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    ft = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {s: ft.convert_tokens_to_ids(s) for s in SPECIALS}
    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(ft), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0],
                           window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    path = tmp_path_factory.mktemp("tiny_qwen")
    model.save_pretrained(path)
    ft.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56).save_pretrained(path)
    return path


class ForceAnswer:
    """A logits processor that makes generation emit ``text`` then end (tests the decode path)."""

    def __init__(self, tokenizer, text, prompt_len):
        self.ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.prompt_len[0]
        out = torch.full_like(scores, -1e9)
        out[:, self.ids[min(k, len(self.ids) - 1)]] = 0.0
        return out


def _frames(b, value):
    return {v: torch.full((b, 32, 32, 3), value, dtype=torch.uint8) for v in VIEWS}


def test_prompt_and_image_plumbing(tiny_qwen):
    be = QwenGRMBackend(tiny_qwen, views=VIEWS, image_size=32, max_new_tokens=4)
    text = be.chat_text("lift the red cube")
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|image_pad|>") == 8 and "`lift the red cube`" in text
    assert text.index("REFERENCE START") < text.index("REFERENCE END") < text.index("BEFORE front") \
        < text.index("AFTER front") < text.index("<score>")
    imgs = [np.full((32, 32, 3), i * 20, np.uint8) for i in range(8)]
    inp = be.build_inputs("lift the red cube", [imgs, imgs])
    pad = be.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_image = int(inp["image_grid_thw"][0].prod()) // 4
    assert inp["image_grid_thw"].shape == (16, 3)
    assert ((inp["input_ids"] == pad).sum(1) == 8 * per_image).all()
    with pytest.raises(ValueError, match="must not be empty"):
        be.chat_text("")
    with pytest.raises(ValueError, match="slots"):
        QwenGRMBackend(tiny_qwen, views=VIEWS, image_size=32, slots=("front", "side", "front"))
    with pytest.raises(FileNotFoundError):
        QwenGRMBackend(tiny_qwen / "missing", views=VIEWS)
    # an untrained model does not answer with a score: explicit None, never 0
    scores = be.score("lift the red cube", _frames(2, 0)["front"], _frames(2, 255)["front"], _frames(2, 10),
                      _frames(2, 200))
    assert scores == [None, None] or all(s is None or -1 <= s <= 1 for s in scores)
    assert len(be.last_answers) == 2


def test_tracker_with_qwen_backend(tiny_qwen):
    prompt_len = [0]
    be = QwenGRMBackend(tiny_qwen, views=VIEWS, image_size=32, max_new_tokens=24)
    force = ForceAnswer(be.tokenizer, "<score>+50%</score>", prompt_len)
    orig = be.build_inputs

    def build(task, queries):
        inp = orig(task, queries)
        prompt_len[0] = inp["input_ids"].shape[1]
        return inp

    be.build_inputs = build
    be.generate_kwargs["logits_processor"] = transformers.LogitsProcessorList([force])
    ref_start = {v: np.zeros((32, 32, 3), np.uint8) for v in VIEWS}
    ref_goal = {v: np.full((32, 32, 3), 255, np.uint8) for v in VIEWS}
    tr = ProgressTracker(be, "lift the red cube", ref_start, ref_goal, 2, fusion="incremental")
    tr.reset(torch.tensor([0, 1]), {"images": _frames(2, 0)})
    phi, done = tr({"images": _frames(2, 50)})
    np.testing.assert_allclose(phi.numpy(), [0.5, 0.5], atol=1e-6)
    assert be.last_answers == ["<score>+50%</score>"] * 2
    phi, done = tr({"images": _frames(2, 90)})
    np.testing.assert_allclose(phi.numpy(), [0.75, 0.75], atol=1e-6)
    assert not done.any()
    # an unparseable answer stops the tracker with the answer in the message
    force.ids = be.tokenizer("no idea")["input_ids"] + [be.tokenizer.eos_token_id]
    with pytest.raises(ScoreParseError, match="no idea"):
        tr({"images": _frames(2, 120)})


def test_grm_potential_loads_a_qwen_checkpoint(tiny_qwen, tmp_path_factory):
    from test_grm import lift_episode_files

    from reward_models.tracker import GRMPotential
    from sim.episodes import read_episodes as load_episodes

    train_file, _ = lift_episode_files(tmp_path_factory)
    with pytest.raises(ValueError, match="reference=<episode file>"):
        GRMPotential(str(tiny_qwen))
    with pytest.raises(ValueError, match="single score: fusion='precision' needs the hop distribution; use auto"):
        GRMPotential(str(tiny_qwen), reference=str(train_file), fusion="precision")
    assert GRMPotential(str(tiny_qwen), reference=str(train_file)).kwargs["fusion"] == "mean"  # auto: Eq. 8
    pot = GRMPotential(str(tiny_qwen), reference=str(train_file), fusion="incremental")
    assert pot.views == VIEWS and pot.task_text == "lift the red cube"
    ep = load_episodes([train_file])[0]
    obs = lambda t: {"images": {v: torch.from_numpy(ep.frames[v][t:t + 1]) for v in VIEWS}}  # noqa: E731
    pot.reset(torch.tensor([0]), obs(0))
    pot.backend.max_new_tokens = 4
    with pytest.raises(ScoreParseError):  # an untrained model gives no score: an error, not a 0
        pot(obs(1))
