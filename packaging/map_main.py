"""MAP entry point, installed as /opt/holoscan/app/__main__.py.

app.json's command is ``python3 /opt/holoscan/app`` (what holoscan-cli writes for a Python application
folder). /opt/holoscan/app holds the repository's packages side by side (app/, operators/, core/), so this
file runs the package ``app`` exactly as ``python -m app`` does from the repository root; command-line
arguments pass through (none in a hosted run: the app then reads the HOLOSCAN_* variables).

Before anything imports holoscan it makes sure ``libcudart.so.13`` can be found: holoscan-cu13's
``libholoscan_core.so`` needs it and only searches its own folders. CUDA base images provide it; on a bare
base image the pip package ``nvidia-cuda-runtime`` ships it in ``site-packages/nvidia/cu13/lib``.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import sys
import sysconfig
from pathlib import Path


def _preload_cudart() -> str | None:
    """Load libcudart.so.13 globally; return the path used, or None when the loader already finds it."""
    try:
        ctypes.CDLL("libcudart.so.13", mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError:
        pass
    for site_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}:
        candidate = Path(site_dir) / "nvidia" / "cu13" / "lib" / "libcudart.so.13"
        if candidate.is_file():
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            return str(candidate)
    return None  # let the holoscan import report the missing library


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    os.environ.setdefault("HOLOSCAN_APPLICATION", here)
    _preload_cudart()
    runpy.run_module("app", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
