"""The batched MuJoCo backend's stepping loop, compiled: one call steps a chunk of envs without the GIL.

:func:`step_chunk` is dm_control's legacy ``Physics.step`` (``mj_step2``, ``n_sub_steps - 1`` times
``mj_step``, ``mj_step1``; RK4: ``n_sub_steps`` times ``mj_step``, then ``mj_step1``) for envs
``lo..hi-1``, with the copies around it that the Python loop of :mod:`sim.mujoco_batched` did per
env: controls in, the one-step push in and out, the state span and the warning counters back. It
calls MuJoCo's C functions (the ``libmujoco`` the ``mujoco`` package ships and its bindings use)
through numba, so a step costs no Python per env and two threads step two chunks truly at once.

One difference from the bindings: a MuJoCo *fatal* error (``mju_error``, e.g. its stack out of
memory) inside this loop goes to MuJoCo's own handler, which ends the process, where the bindings
raise ``mujoco.FatalError``. Divergence (NaN, instability warnings) is not an error: it is counted in
``MjData.warning`` and handled by the env as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import mujoco
import numba
import numpy as np


def _library() -> ctypes.CDLL:
    """The ``libmujoco`` shipped in the ``mujoco`` package (the one its bindings are linked to)."""
    folder = Path(mujoco.__file__).parent
    found = sorted(folder.glob(f"libmujoco.so.{mujoco.__version__}")) or sorted(folder.glob("libmujoco*"))
    if not found:
        raise ImportError(f"no libmujoco shared library in {folder} (mujoco {mujoco.__version__})")
    return ctypes.CDLL(str(found[0]))


def _c_function(lib: ctypes.CDLL, name: str, nargs: int, restype=None):
    f = getattr(lib, name)
    f.argtypes = [ctypes.c_size_t] * nargs  # pointers and sizes passed as integers (numba: uintp)
    f.restype = restype
    return f


# numba's threading layer for step_chunks: one that several Python threads may launch from at once
# (TBB or OpenMP; numba's own "workqueue" layer aborts the process on concurrent launches). A user's
# NUMBA_THREADING_LAYER stands.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "threadsafe"

_MJ = _library()
_mj_step = _c_function(_MJ, "mj_step", 2)
_mj_step1 = _c_function(_MJ, "mj_step1", 2)
_mj_step2 = _c_function(_MJ, "mj_step2", 2)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_memcpy = _c_function(_LIBC, "memcpy", 3, ctypes.c_size_t)
_memset = _c_function(_LIBC, "memset", 3, ctypes.c_size_t)


@numba.njit(nogil=True)  # not cache=True: numba cannot cache calls through ctypes pointers
def step_chunk(lo, hi, models, datas, ctrl_dst, span_src, warn_src, xfrc_dst, ctrl, buf, warnings, xfrc,
               push, n_sub, rk4, row_sums, warn_columns, bad):
    """One control step of envs ``lo..hi-1``.

    Args:
        lo, hi: env index range.
        models, datas: uint64 ``[B]``: addresses of each env's ``mjModel`` / ``mjData``.
        ctrl_dst, span_src, warn_src, xfrc_dst: uint64 ``[B]``: addresses of each env's ``d.ctrl``,
            the state span (``qpos`` on, see ``sim.mujoco_batched._Span``), ``d.warning`` and
            ``d.xfrc_applied``.
        ctrl: float64 ``[B, nu]`` C-contiguous: the controls to set.
        buf: float64 ``[B, span]`` C-contiguous: receives each env's state span after the step.
        warnings: int32 ``[B, 2 * mjNWARNING]`` C-contiguous: receives each env's ``d.warning``
            (``mjWarningStat``: ``lastinfo``, ``number`` per warning) after the step.
        xfrc: float64 ``[B, nbody, 6]`` C-contiguous: the push (N, N m), used when ``push``: copied
            into ``d.xfrc_applied`` before the step and cleared after it.
        n_sub: physics steps per control step (>= 1); rk4: the model integrates with RK4.
        row_sums: float64 ``[B]``: receives the sum of each env's span (NaN/inf where any entry is).
        warn_columns: int64 ``[K]``: columns of ``warnings`` that mean divergence (their ``number``).
        bad: bool ``[B]``: receives whether any of them counted for the env.
    """
    nu8 = ctrl.shape[1] * 8
    span8 = buf.shape[1] * 8
    warn_bytes = warnings.shape[1] * 4
    xfrc8 = (xfrc.size // max(xfrc.shape[0], 1)) * 8
    ctrl_base, buf_base = ctrl.ctypes.data, buf.ctypes.data
    warn_base, xfrc_base = warnings.ctypes.data, xfrc.ctypes.data
    for i in range(lo, hi):
        m, d = models[i], datas[i]
        _memcpy(ctrl_dst[i], ctrl_base + i * nu8, nu8)
        if push:
            _memcpy(xfrc_dst[i], xfrc_base + i * xfrc8, xfrc8)
        if rk4:
            for _ in range(n_sub):
                _mj_step(m, d)
        else:
            _mj_step2(m, d)
            for _ in range(n_sub - 1):
                _mj_step(m, d)
        _mj_step1(m, d)
        if push:
            _memset(xfrc_dst[i], 0, xfrc8)
        _memcpy(buf_base + i * span8, span_src[i], span8)
        _memcpy(warn_base + i * warn_bytes, warn_src[i], warn_bytes)
        bad[i] = False
        for c in warn_columns:
            if warnings[i, c] > 0:
                bad[i] = True
        s = 0.0
        for k in range(buf.shape[1]):
            s += buf[i, k]
        row_sums[i] = s


def addresses(arrays) -> np.ndarray:
    """uint64 ``[len(arrays)]``: the data address of each numpy array (or ``_address`` of each
    MuJoCo struct)."""
    return np.array([a._address if hasattr(a, "_address") else a.ctypes.data for a in arrays], dtype=np.uint64)


@numba.njit(nogil=True, parallel=True)
def step_chunks(nchunks, models, datas, ctrl_dst, span_src, warn_src, xfrc_dst, ctrl, buf, warnings, xfrc, push,
                n_sub, rk4, row_sums, warn_columns, bad):
    """:func:`step_chunk` over all ``B`` envs split into ``nchunks`` contiguous chunks stepped in
    parallel by numba's threading layer (``prange``; each env is stepped alone, so the results do
    not depend on ``nchunks``). Arguments as :func:`step_chunk`'s."""
    B = models.shape[0]
    numba.set_num_threads(nchunks)  # this thread's launches use nchunks of the layer's threads
    for c in numba.prange(nchunks):
        step_chunk(c * B // nchunks, (c + 1) * B // nchunks, models, datas, ctrl_dst, span_src, warn_src, xfrc_dst,
                   ctrl, buf, warnings, xfrc, push, n_sub, rk4, row_sums, warn_columns, bad)


@numba.njit(parallel=True)
def _probe(n):
    out = np.zeros(n)
    for i in numba.prange(n):
        out[i] = i
    return out.sum()


_LAYER: list = []  # [the threading layer's name, or the error that loading one raised], once found


def parallel_threads(n: int) -> tuple[int, str | None]:
    """How many threads :func:`step_chunks` can use for ``n`` wanted: ``(min(n, the layer's pool),
    None)``, or ``(1, why)`` where no thread-safe threading layer loads (numba's TBB and OpenMP
    layers; the reason names the error). The first call loads the layer (compiles a probe, ~0.5 s)."""
    if not _LAYER:
        try:
            _probe(2)
            _LAYER.append(numba.threading_layer())
        except (ValueError, ImportError, RuntimeError) as e:
            _LAYER.append(e)
    if isinstance(_LAYER[0], Exception):
        return 1, f"no thread-safe numba threading layer (TBB or OpenMP) loads: {_LAYER[0]}"
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)), None
