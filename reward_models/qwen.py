"""The published Robo-Dopamine GRM (a Qwen2.5-VL model) as a hop backend of the progress tracker.

Install with the optional extra ``pip install -e .[qwen]`` (transformers, tokenizers, pillow). A
checkpoint is loaded from a local folder only (``local_files_only=True``); nothing is downloaded.

One query is one chat prompt holding the task text, a REFERENCE START and a REFERENCE END image
(front camera), then BEFORE and AFTER images of three views: front, left wrist, right wrist (the
published model's slots). ``slots`` maps them to this project's view names; with fewer cameras the
front image is repeated, as the model card says for one camera. The model answers a relative hop
as ``<score>+NN%</score>`` or ``<score>-NN%</score>``; :func:`parse_score` reads it (decimals
accepted, e.g. ``+33.3%``, which the released data generator emits) and returns ``None`` for a
missing or malformed tag, never a silent 0 (the failure of Robo-Dopamine issue #3). In the tracker
(:meth:`QwenGRMBackend.hop_encoded`) an unparseable answer raises :class:`ScoreParseError` with
the raw answer.

Image plumbing: the Qwen2.5-VL image processor (the PIL one, which needs no torchvision) gives
``pixel_values`` and ``image_grid_thw``; each ``<|image_pad|>`` placeholder is expanded to
``prod(grid_thw) / merge_size**2`` tokens, exactly as ``Qwen2_5_VLProcessor`` does (that class
also wants a torchvision video processor, which this project does not install).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from reward_models.grm import check_images, check_views
from reward_models.text import check_task_text

__all__ = ["PROMPT", "SLOTS", "ScoreParseError", "parse_score", "parse_score_strict", "default_slots",
           "QwenGRMBackend"]

#: The published model's three camera slots, in prompt order.
SLOTS = ("front", "left wrist", "right wrist")

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

#: The query (Robo-Dopamine's GRM prompt structure: task, two reference anchors, BEFORE and AFTER
#: three-view sets, strict ``<score>`` output). ``{task}`` is filled in; each ``<image>`` is one image.
PROMPT = """You judge the progress of a robot task from images. Decide whether the AFTER image set is closer to completing the task than the BEFORE image set, using the reference images as anchors.

<Task>
`{task}`

REFERENCE images (anchors only; not necessarily this run's own start and end):
- REFERENCE START, front camera (task just starting): <image>
- REFERENCE END, front camera (task fully completed): <image>
</Task>

BEFORE front camera: <image>
BEFORE left wrist camera: <image>
BEFORE right wrist camera: <image>

AFTER front camera: <image>
AFTER left wrist camera: <image>
AFTER right wrist camera: <image>

Place BEFORE and AFTER on the START-to-END continuum. An improvement is scored as a share of what remained from BEFORE to END; a regression as a share of the progress BEFORE had made since START; no change is 0. Answer with one line only:
<score>+NN%</score> or <score>-NN%</score> or <score>0%</score>"""

_SCORE = re.compile(r"<score>\s*([+-]?)\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*</score>", re.IGNORECASE)
_TAG = re.compile(r"<score>(.*?)</score>", re.IGNORECASE | re.DOTALL)


class ScoreParseError(ValueError):
    """The model's answer holds no well-formed ``<score>...%</score>`` tag; ``.answer`` is the raw text."""

    def __init__(self, answer: str, reason: str):
        super().__init__(f"no hop score in the model's answer ({reason}): {answer!r}")
        self.answer = answer


def _parse(text: str) -> tuple[float | None, str]:
    if not isinstance(text, str):
        return None, f"answer is {type(text).__name__}, not text"
    tags = _TAG.findall(text)
    if not tags:
        return None, "no <score>...</score> tag"
    m = list(_SCORE.finditer(text))
    if len(m) != len(tags):
        return None, "malformed <score> tag"
    values = {(-1.0 if g.group(1) == "-" else 1.0) * float(g.group(2)) for g in m}
    if len(values) > 1:
        return None, f"several different scores {sorted(values)}"
    v = values.pop()
    if abs(v) > 100.0:
        return None, f"score {v:+g}% outside [-100%, +100%]"
    return v / 100.0, ""


def parse_score(text: str) -> float | None:
    """``'<score>+12.5%</score>'`` -> 0.125; ``'<score>-40%</score>'`` -> -0.4; ``'<score>0%</score>'`` -> 0.0.

    Whitespace inside the tag and upper case are accepted; repeated tags must agree. Returns
    ``None`` (an explicit "no score") for a missing or malformed tag, several different scores,
    or a value outside [-100%, +100%]; never 0 for a failure.
    """
    return _parse(text)[0]


def parse_score_strict(text: str) -> float:
    """Like :func:`parse_score`, but a missing/malformed score raises :class:`ScoreParseError`."""
    v, why = _parse(text)
    if v is None:
        raise ScoreParseError(text, why)
    return v


def default_slots(views) -> tuple[str, str, str]:
    """This project's views for the (front, left wrist, right wrist) slots: ``views[0]`` in the
    front slot, then the next views, the front view repeated where cameras run out."""
    views = tuple(views)
    if not views:
        raise ValueError("at least one view is needed")
    return (views[0], views[1] if len(views) > 1 else views[0], views[2] if len(views) > 2 else views[0])


class QwenGRMBackend:
    """A Qwen2.5-VL GRM behind the tracker's hop-backend interface (see :class:`reward_models.tracker.GRMBackend`).

    Args:
        model_path: local checkpoint folder (weights, tokenizer, preprocessor config); or pass
            ``model``, ``tokenizer`` and ``image_processor`` objects directly.
        views: this project's camera views fed to the tracker (``obs["images"]`` keys).
        image_size: pixels per side of those views.
        slots: views for the (front, left wrist, right wrist) slots (default :func:`default_slots`).
        device, dtype: where and in which dtype to run the model.
        max_new_tokens: generation budget of one answer.
        batch_size: prompts per ``generate`` call.
        prompt: the query template (default :data:`PROMPT`; exactly 8 ``<image>`` and a ``{task}``).
        generate_kwargs: extra ``generate`` arguments (greedy decoding by default).
    Raises:
        FileNotFoundError: ``model_path`` is not a folder. ValueError: bad slots/prompt, or a
            tokenizer without the Qwen vision tokens.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, model=None, tokenizer=None,
                 image_processor=None, views=("front", "wrist"), image_size: int = 64, slots=None,
                 device: str = "cpu", dtype=None, max_new_tokens: int = 24, batch_size: int = 8,
                 prompt: str = PROMPT, generate_kwargs: dict | None = None):
        if model_path is not None:  # lazy: transformers is optional (pip install -e .[qwen]) and heavy
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

            path = Path(model_path)
            if not path.is_dir():
                raise FileNotFoundError(f"no Qwen GRM checkpoint folder {str(path)!r}")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, local_files_only=True)
            image_processor = image_processor or Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
            model = model or Qwen2_5_VLForConditionalGeneration.from_pretrained(
                path, local_files_only=True, dtype=dtype or torch.float32)
        if model is None or tokenizer is None or image_processor is None:
            raise ValueError("give model_path, or all of model, tokenizer and image_processor")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self.views = tuple(views)
        self.image_size = int(image_size)
        self.reference_view = self.views[0]
        self.slots = tuple(slots) if slots is not None else default_slots(self.views)
        if len(self.slots) != 3 or any(s not in self.views for s in self.slots):
            raise ValueError(f"slots must name 3 of the views {list(self.views)} for {list(SLOTS)}, got {self.slots}")
        if prompt.count("<image>") != 8 or "{task}" not in prompt:
            raise ValueError("the prompt needs exactly 8 '<image>' placeholders and a '{task}' field")
        self.prompt = prompt
        for tok in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"):
            tid = tokenizer.convert_tokens_to_ids(tok)
            if tid is None or tid == getattr(tokenizer, "unk_token_id", -1):
                raise ValueError(f"the tokenizer has no {tok} token; is this a Qwen2.5-VL checkpoint?")
        self.merge = int(getattr(image_processor, "merge_size", 2))
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.generate_kwargs = {"do_sample": False, **(generate_kwargs or {})}
        self.last_answers: list[str] = []

    # ---- prompt --------------------------------------------------------------------------------
    def chat_text(self, task: str) -> str:
        """The chat-formatted prompt of one query (image placeholders not yet expanded)."""
        body = self.prompt.replace("{task}", check_task_text(task)).replace("<image>", IMAGE)
        return f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"

    def build_inputs(self, task: str, queries: list[list[np.ndarray]]) -> dict:
        """Model inputs for ``queries``, each 8 uint8 [H, W, 3] images in prompt order (ref start,
        ref end, BEFORE front/left/right, AFTER front/left/right)."""
        images = [np.asarray(im) for q in queries for im in q]
        if any(len(q) != 8 for q in queries):
            raise ValueError("each query needs exactly 8 images")
        pix = self.image_processor(images=images, return_tensors="pt")
        counts = (pix["image_grid_thw"].prod(-1) // (self.merge ** 2)).tolist()
        texts, k = [], 0
        base = self.chat_text(task)
        for _ in queries:
            parts = base.split("<|image_pad|>")
            t = parts[0]
            for p in parts[1:]:
                t += "<|image_pad|>" * int(counts[k]) + p
                k += 1
            texts.append(t)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        return {**enc, "pixel_values": pix["pixel_values"], "image_grid_thw": pix["image_grid_thw"]}

    @torch.inference_mode()
    def answers(self, task: str, queries: list[list[np.ndarray]]) -> list[str]:
        """Raw generated answers, one per query."""
        out = []
        for s in range(0, len(queries), self.batch_size):
            inputs = {k: v.to(self.device) for k, v in self.build_inputs(task, queries[s:s + self.batch_size]).items()}
            gen = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **self.generate_kwargs)
            new = gen[:, inputs["input_ids"].shape[1]:]
            out += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        self.last_answers = out
        return out

    def score(self, task: str, ref_start, ref_goal, before: dict, after: dict) -> list[float | None]:
        """Hops of a batch, with an explicit ``None`` where the answer held no valid score.

        Args:
            ref_start, ref_goal: uint8 [B, H, W, 3] front-camera reference frames.
            before, after: {view: uint8 [B, H, W, 3]} holding the backend's views.
        """
        rs = check_images(ref_start, "ref_start", self.image_size)
        rg = check_images(ref_goal, "ref_goal", self.image_size, rs.shape[0])
        b = check_views(before, self.views, "before", self.image_size, rs.shape[0])
        a = check_views(after, self.views, "after", self.image_size, rs.shape[0])
        queries = [[rs[i].numpy(), rg[i].numpy(), *[b[s][i].numpy() for s in self.slots],
                    *[a[s][i].numpy() for s in self.slots]] for i in range(rs.shape[0])]
        return [parse_score(t) for t in self.answers(task, queries)]

    # ---- the tracker's backend interface ----------------------------------------------------------
    def encode_text(self, text: str) -> str:
        return check_task_text(text)

    def encode_reference(self, image) -> torch.Tensor:
        return check_images(image, "reference", self.image_size)

    def encode_views(self, images: dict) -> torch.Tensor:
        """{view: uint8 [B, H, W, 3]} -> uint8 [B, V, H, W, 3] (images are kept, not encoded)."""
        imgs = check_views(images, self.views, "images", self.image_size)
        return torch.stack([imgs[v] for v in self.views], 1)

    def hop_encoded(self, text: str, start, goal, before, after) -> torch.Tensor:
        """float32 [B] hops. Raises :class:`ScoreParseError` (with the answer) if one is unparseable."""
        n = before.shape[0]
        idx = [self.views.index(s) for s in self.slots]
        st = start.expand(n, *start.shape[1:]) if start.shape[0] == 1 else start
        gl = goal.expand(n, *goal.shape[1:]) if goal.shape[0] == 1 else goal
        queries = [[st[i].numpy(), gl[i].numpy(), *[before[i, j].numpy() for j in idx],
                    *[after[i, j].numpy() for j in idx]] for i in range(n)]
        hops = []
        for t in self.answers(text, queries):
            hops.append(parse_score_strict(t))
        return torch.tensor(hops, dtype=torch.float32)
