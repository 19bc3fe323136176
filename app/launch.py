"""Running the application as deployed, ``python -m app -i IN -o OUT -m MODELS``, in a subprocess.

One command line for every caller that runs the application from outside: the tests (``tests/conftest.py``,
``tests/robust_cases.py``), the validation runner (``validation/runner.py``) and the benchmark (``bench``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = REPO / "models"


def app_command(input_dir: Path, output_dir: Path, models_dir: Path = DEFAULT_MODELS, *args: str,
                python: str = sys.executable) -> list[str]:
    """The command line that runs the application on ``input_dir`` (extra ``args``: e.g. ``--config``)."""
    return [python, "-m", "app", "-i", str(input_dir), "-o", str(output_dir), "-m", str(models_dir), *args]


@dataclass
class AppRun:
    """One finished run of the application."""

    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def result(self) -> dict[str, Any]:
        """The run's result.json (raises when it wrote none, e.g. exit code 4)."""
        doc: dict[str, Any] = json.loads((self.output_dir / "result.json").read_text())
        return doc


def threads_per_run(concurrent: int) -> dict[str, str]:
    """Environment that makes each of ``concurrent`` simultaneous application runs use its share of the CPUs this
    process may use (at least one thread each), so that together they fill the CPUs without oversubscribing them.

    torch (and OpenMP/BLAS) read ``OMP_NUM_THREADS``; without it every run starts one thread per CPU, and two
    runs at once on 2 cores were about 25 % slower than with one thread each (docs/robustness.md). A value the
    caller's environment already sets wins (empty dict). One run alone keeps the application's own default.
    """
    if concurrent <= 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // concurrent))}


def run_app(input_dir: Path, output_dir: Path, models_dir: Path = DEFAULT_MODELS, *args: str,
            env: dict[str, str] | None = None, timeout: float = 600) -> AppRun:
    """Run the application to its end (from the repository root) and return its exit code and streams."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(app_command(input_dir, output_dir, models_dir, *args), cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return AppRun(proc.returncode, proc.stdout, proc.stderr, Path(output_dir))


def run_apps(jobs: Sequence[tuple[Path, Path]], models_dir: Path = DEFAULT_MODELS, *args: str,
             workers: int = 2, timeout: float = 600) -> list[AppRun]:
    """:func:`run_app` for each ``(input_dir, output_dir)`` of ``jobs``, ``workers`` runs at a time.

    The runs are independent processes (each stages its outputs in its own temporary folder), so on a 2-core
    machine two at once finish sooner than one after the other; each uses its share of the CPUs
    (:func:`threads_per_run`). Results are in the order of ``jobs``.
    """
    env = threads_per_run(min(max(1, workers), len(jobs)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: run_app(job[0], job[1], models_dir, *args, env=env, timeout=timeout),
                             jobs))
