"""Offscreen rendering through MuJoCo's own renderer (``mujoco.Renderer``), headless via EGL.

One GL library holds contexts (MuJoCo's), so interpreter exit prints no EGL finalizer errors;
all renderers made here are closed by an ``atexit`` hook before the GL display goes away.
"""

from __future__ import annotations

import atexit
import os
import weakref

import mujoco
import numpy as np

_LIVE: "weakref.WeakSet[mujoco.Renderer]" = weakref.WeakSet()


class RenderingError(RuntimeError):
    """No OpenGL backend could make an offscreen context."""


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """Create an offscreen renderer of ``height`` x ``width`` pixels for ``model``.

    Raises:
        RenderingError: the GL backend named by ``MUJOCO_GL`` failed; the message names it and
            what was tried.
    """
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    # The offscreen buffer must hold the requested size.
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # mujoco raises several types depending on the backend
        raise RenderingError(
            f"could not create an OpenGL context with MUJOCO_GL={backend!r} ({type(exc).__name__}: {exc}). "
            "Tried: that backend only. Headless machines need MUJOCO_GL=egl with Mesa's EGL "
            "(Debian: libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa with libOSMesa; set MUJOCO_GL "
            "before Python starts."
        ) from None
    _LIVE.add(renderer)
    return renderer


def render_camera(renderer: mujoco.Renderer, data: mujoco.MjData, camera: str) -> np.ndarray:
    """Render ``camera`` of the current state. Returns ``uint8 [H, W, 3]``, upright (row 0 = top)."""
    renderer.update_scene(data, camera=camera)
    return renderer.render().copy()


@atexit.register
def _close_all() -> None:
    for renderer in list(_LIVE):
        try:
            renderer.close()
        except Exception:
            pass
