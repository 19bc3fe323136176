"""Process-level set-up that must happen before Holoscan is imported.

holoscan-cu13's core library needs ``libcudart.so.13`` at import time. CUDA images and machines with the
CUDA 13 toolkit have it; elsewhere the pip package ``nvidia-cuda-runtime`` ships it in
``nvidia/cu13/lib``, which Holoscan does not search, so it is loaded here first (CPU-only hosts then run
the application on the CPU).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path


def preload_cudart() -> str | None:
    """Make ``libcudart.so.13`` loadable; returns the path loaded, or None when the system already has it."""
    try:
        ctypes.CDLL("libcudart.so.13", mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError:
        pass
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        for cand in (sorted(Path(root).glob("cu13/lib/libcudart.so.13*"))
                     + sorted(Path(root).glob("cuda_runtime/lib/libcudart.so.13*"))):
            ctypes.CDLL(str(cand), mode=ctypes.RTLD_GLOBAL)
            return str(cand)
    return None


def quiet_threads() -> None:
    """Keep OpenMP/BLAS from oversubscribing small hosts (torch sets its own pool from this)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)))))
