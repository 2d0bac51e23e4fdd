"""Offscreen rendering through MuJoCo's own renderer (``mujoco.Renderer``), headless via EGL.

One GL library holds contexts (MuJoCo's), so interpreter exit prints no EGL finalizer errors;
all renderers made here are closed by an ``atexit`` hook before the GL display goes away.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref

import numpy as np

_LIVE: "weakref.WeakSet" = weakref.WeakSet()
KNOWN_BACKENDS = ("egl", "osmesa", "glfw")


class RenderingError(RuntimeError):
    """No OpenGL backend could make an offscreen context."""


_GL_MODULE_HINTS = ("OpenGL", "gl_context", "_render", "glfw", "egl", "osmesa")


def _is_gl_failure(exc: BaseException) -> bool:
    if "MUJOCO_GL" in str(exc) or "PYOPENGL" in str(exc):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if any(h in tb.tb_frame.f_code.co_filename for h in _GL_MODULE_HINTS):
            return True
        tb = tb.tb_next
    return False


def gl_error(exc: BaseException) -> RenderingError:
    """The one message for "no OpenGL backend works", naming ``MUJOCO_GL`` and what was tried."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    return RenderingError(
        f"could not use OpenGL with MUJOCO_GL={backend!r} ({type(exc).__name__}: {exc}). "
        f"Tried: {backend} (a process can only use the backend set before it starts). Headless "
        "machines need MUJOCO_GL=egl with Mesa's EGL (Debian: libegl1 libgl1-mesa-dri) or "
        "MUJOCO_GL=osmesa with libOSMesa (Debian: libosmesa6); on a desktop, MUJOCO_GL=glfw."
    )


@contextlib.contextmanager
def gl_guard():
    """Turn GL failures raised inside the block (importing dm_control, making a context) into
    one :class:`RenderingError`; other exceptions pass through unchanged."""
    try:
        yield
    except RenderingError:
        raise
    except Exception as exc:
        if _is_gl_failure(exc):
            raise gl_error(exc) from None
        raise


def check_mujoco_gl() -> None:
    """Validate ``MUJOCO_GL`` before MuJoCo is imported (MuJoCo refuses to import with a bad value).

    Raises:
        RenderingError: the value is not one of ``egl``, ``osmesa``, ``glfw``.
    """
    backend = os.environ.get("MUJOCO_GL")
    if backend is not None and backend.lower() not in KNOWN_BACKENDS:
        raise RenderingError(f"MUJOCO_GL={backend!r} is not a MuJoCo GL backend; allowed: "
                             f"{', '.join(KNOWN_BACKENDS)} (headless machines: egl)")


# Multisample anti-aliasing of the offscreen buffer (MuJoCo's ``vis.quality.offsamples``, 4 by
# default). On a CPU GL driver (Mesa llvmpipe) resolving 4 samples takes about half of a 64 px
# frame's time; at the small sizes policies and the GRM see, it changes little (mean absolute
# pixel difference about 3.6 of 255 on Lift's front view). 0 renders each pixel once.
OFFSCREEN_SAMPLES = 0


def make_renderer(model, height: int, width: int):
    """Create an offscreen renderer of ``height`` x ``width`` pixels for ``model``.

    The model's offscreen buffer is grown to the requested size if needed and its multisampling set
    to :data:`OFFSCREEN_SAMPLES` (both are ``model.vis`` settings read when the GL context is made).

    Raises:
        RenderingError: the GL backend named by ``MUJOCO_GL`` failed; the message names it and
            what was tried.
    """
    import mujoco

    # The offscreen buffer must hold the requested size.
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
    model.vis.quality.offsamples = OFFSCREEN_SAMPLES
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # mujoco/PyOpenGL raise several types depending on the backend
        raise gl_error(exc) from None
    global _HOOKED
    if not _HOOKED:
        # Registered after MuJoCo's own eglTerminate hook (made with the first context), so it
        # runs before it: contexts are freed while the EGL display is still alive.
        atexit.register(_close_all)
        _HOOKED = True
    _LIVE.add(renderer)
    return renderer


def render_camera(renderer, data, camera: str) -> np.ndarray:
    """Render ``camera`` of the current state. Returns ``uint8 [H, W, 3]``, upright (row 0 = top)."""
    renderer.update_scene(data, camera=camera)
    return renderer.render().copy()


_HOOKED = False


def _close_all() -> None:
    for renderer in list(_LIVE):
        try:
            renderer.close()
        except Exception:
            pass
