"""Run the deployed application on every study of a manifest, resumably, locally or on a Ray cluster.

One study = one run of the application exactly as deployed:

* default: ``python -m app -i DICOM_DIR -o OUT -m MODELS`` in a subprocess (the repository's interpreter);
* ``image``: ``podman run --rm --network none -v DICOM_DIR:/var/holoscan/input:ro
  -v OUT:/var/holoscan/output [-v MODELS:/opt/holoscan/models:ro] IMAGE`` (the MAP; without ``models`` the
  image's own models are used).

``OUT`` is a private staging folder ``REPORT_DIR/runs/.partial-<case_id>``; when the application has exited,
the runner adds ``runner.json`` (exit code, wall time, how it was run) and, if the application left no
``result.json`` (crash, timeout), a ``result.json`` of status ``error`` with the reason (``runner_generated``:
true); then the folder is renamed to ``REPORT_DIR/runs/<case_id>`` in one atomic step. A study is finished
when ``REPORT_DIR/runs/<case_id>/result.json`` exists and was produced by the models being validated (the
sha256 in its ``models`` block equals the one in each model's ``metadata.json``): it is never run again. A
result of other models (the models were retrained since) is run again, and so are finished studies of status
``error`` with ``retry_errors``. With an image and no ``models`` the models are the image's own, not known here,
and every published result counts as finished. A stale staging folder (interrupted run) is removed and the study run
again. The application's console output goes to ``REPORT_DIR/logs/<case_id>.log``.

After the run (or when reused), the worker reads the study back (result.json, runner.json, and the SEG against
the reference label map, see ``validation.segmentation``) into a JSON-able *case record*, which is what the
statistics use. Workers are a local process pool, or one Ray task per study (``ray_address``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app import launch
from core.run_state import NO_OUTPUTS, SCHEMA
from core.status import ANALYSED, Status
from validation.manifest import Case
from validation.provenance import models_provenance

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RUNNER_GENERATED = "runner_generated"
#: statuses after which the study has been analysed (the others are listed as failures)


@dataclass(frozen=True)
class RunConfig:
    """How to run each study (picklable: it travels to pool workers and Ray tasks)."""

    report_dir: Path
    models: Path | None = None          # None with an image: the image's own models
    image: str | None = None
    container_engine: str = "podman"
    gpu: bool = False                   # podman: pass the GPUs in (CDI nvidia.com/gpu=all)
    timeout_s: float = 3600.0
    retry_errors: bool = False
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def runs_dir(self) -> Path:
        return self.report_dir / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.report_dir / "logs"


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validated_models(cfg: RunConfig) -> dict[str, str]:
    """name -> sha256 (from each ``metadata.json``, :func:`validation.provenance.models_provenance`) of the models
    this run validates; empty when they are not known here (an image's own models)."""
    return {name: m["sha256"] for name, m in models_provenance(cfg.models).items()
            if isinstance(m.get("sha256"), str)}


def stale_models(result: dict[str, Any], models: dict[str, str]) -> list[str]:
    """Names of the models that produced ``result`` (its ``models`` block) with another sha256 than ``models``."""
    used = result.get("models") if isinstance(result.get("models"), dict) else {}
    return sorted(name for name, m in used.items()
                  if name in models and isinstance(m, dict) and m.get("sha256") != models[name])


def is_finished(cfg: RunConfig, case_id: str, models: dict[str, str] | None = None) -> bool:
    """True when the study has a readable published result that was produced by the models being validated
    (``models``: :func:`validated_models`, computed here when not given) and is not an error to retry."""
    result = cfg.runs_dir / case_id / "result.json"
    if not result.is_file():
        return False
    try:
        doc = json.loads(result.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or (cfg.retry_errors and doc.get("status") == Status.ERROR):
        return False
    return not stale_models(doc, validated_models(cfg) if models is None else models)


def app_command(cfg: RunConfig, case: Case, out_dir: Path) -> list[str]:
    """The command line that runs the application on one study, writing to ``out_dir``."""
    if cfg.image:
        cmd = [cfg.container_engine, "run", "--rm", "--network", "none",
               "-v", f"{case.dicom_dir}:/var/holoscan/input:ro", "-v", f"{out_dir}:/var/holoscan/output"]
        if cfg.models is not None:
            cmd += ["-v", f"{cfg.models}:/opt/holoscan/models:ro"]
        if cfg.gpu:
            cmd += ["--device", "nvidia.com/gpu=all"]
        return cmd + [cfg.image]
    return launch.app_command(case.dicom_dir, out_dir, cfg.models or launch.DEFAULT_MODELS, python=cfg.python)


def run_study(cfg: RunConfig, case: Case) -> bool:
    """Run the application on one study unless it is finished. Returns True if it ran now."""
    final = cfg.runs_dir / case.case_id
    if is_finished(cfg, case.case_id):
        return False
    staging = cfg.runs_dir / f".partial-{case.case_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if cfg.image:
        staging.chmod(0o777)  # the container's (non-root) user writes here
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cmd = app_command(cfg, case, staging)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **cfg.extra_env}
    t0 = time.perf_counter()
    timed_out = False
    with open(cfg.logs_dir / f"{case.case_id}.log", "w") as logf:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=cfg.timeout_s)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
    wall = round(time.perf_counter() - t0, 3)
    if not (staging / "result.json").is_file():
        reason = (f"the application did not finish within {cfg.timeout_s:g} s" if timed_out else
                  f"the application exited with code {code} without writing result.json")
        write_json_atomic(staging / "result.json", {
            "schema": SCHEMA, "status": Status.ERROR, "reason": reason, "warnings": [],
            "predicted_class": None, "probabilities": {}, "outputs": dict(NO_OUTPUTS), "dicom_outputs": [],
            RUNNER_GENERATED: True})
    write_json_atomic(staging / "runner.json", {
        "exit_code": code, "timed_out": timed_out, "wall_s": wall,
        "mode": "image" if cfg.image else "python", "image": cfg.image,
        "command": [Path(cmd[0]).name, *cmd[1:]]})
    if final.exists():  # an error being retried, a result of other models, or a folder without result.json
        shutil.rmtree(final)
    os.replace(staging, final)
    return True


def case_record(cfg: RunConfig, case: Case) -> dict[str, Any]:
    """What the statistics need from one finished study (deterministic: no timings)."""
    run_dir = cfg.runs_dir / case.case_id
    result = json.loads((run_dir / "result.json").read_text())
    try:
        runner = json.loads((run_dir / "runner.json").read_text())
    except (OSError, ValueError):
        runner = {}
    status = result.get("status")
    tumour = result.get("tumour") or {}
    hip = result.get("hip_bone") or {}
    rec: dict[str, Any] = {
        "case_id": case.case_id,
        "truth": case.truth,
        "status": status,
        "exit_code": runner.get("exit_code"),
        "reason": result.get("reason"),
        "warnings": list(result.get("warnings") or []),
        "runner_generated": bool(result.get(RUNNER_GENERATED)),
        "predicted_class": result.get("predicted_class"),
        "probabilities": dict(result.get("probabilities") or {}),
        "ablation": dict(result.get("ablation") or {}),
        "tumour_volume_ml": tumour.get("volume_ml"),
        "tumour_mean_probability": tumour.get("mean_probability"),
        "hip_bone_left_ml": hip.get("left_volume_ml"),
        "hip_bone_right_ml": hip.get("right_volume_ml"),
        "models": result.get("models") or {},
        "readers": dict(case.readers),
        "subgroups": dict(case.subgroups),
        "segmentation": None,
        "segmentation_error": None,
    }
    if case.label_path is not None and status != Status.ERROR:
        from validation.segmentation import SegEvaluationError, evaluate_case
        try:
            rec["segmentation"] = evaluate_case(run_dir, result, case.dicom_dir, case.label_path)
        except (SegEvaluationError, OSError, RuntimeError, KeyError, ValueError) as e:
            rec["segmentation_error"] = f"{type(e).__name__}: {e}"
    return rec


def process_case(cfg: RunConfig, case: Case) -> dict[str, Any]:
    """Run (if needed) and read back one study: the unit of work of the pool and of Ray."""
    t0 = time.perf_counter()
    ran = run_study(cfg, case)
    rec = case_record(cfg, case)
    return {"record": rec, "ran": ran, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- execution
class Progress:
    """Progress lines on stderr: studies done, run now / reused, failures, estimated time left."""

    def __init__(self, total: int, workers: int, stream: Any = None) -> None:
        self.total, self.workers, self.stream = total, max(1, workers), stream or sys.stderr
        self.done = self.ran = self.failed = 0
        self.run_seconds = 0.0
        self.t0 = time.perf_counter()

    def update(self, item: dict[str, Any]) -> None:
        self.done += 1
        if item["ran"]:
            self.ran += 1
            self.run_seconds += item["seconds"]
        rec = item["record"]
        if rec["status"] not in ANALYSED:
            self.failed += 1
        left = self.total - self.done
        if self.ran:
            eta = left * (self.run_seconds / self.ran) / self.workers
            eta_s = f"~{_fmt_duration(eta)} left"
        else:
            eta_s = "time left: unknown (no study run yet)" if left else "done"
        print(f"[validation] {self.done}/{self.total} studies done ({self.ran} run now, {self.done - self.ran} "
              f"reused), {self.failed} failed/not applicable, {_fmt_duration(time.perf_counter() - self.t0)} "
              f"elapsed, {eta_s}; last: {rec['case_id']} {rec['status']}", file=self.stream, flush=True)


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _iter_pool(cfg: RunConfig, cases: list[Case], workers: int) -> Iterator[dict[str, Any]]:
    import multiprocessing as mp
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=mp.get_context("spawn")) as ex:
        pending = {ex.submit(process_case, cfg, c) for c in cases}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()


def _iter_ray(cfg: RunConfig, cases: list[Case], address: str, gpu: bool, cpus_per_study: float
              ) -> Iterator[dict[str, Any]]:
    import ray
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}}
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    if "OMP_NUM_THREADS" not in os.environ:  # each study uses the CPUs Ray reserved for it, no more
        cfg = replace(cfg, extra_env={"OMP_NUM_THREADS": str(max(1, int(cpus_per_study))), **cfg.extra_env})
    try:
        task = ray.remote(num_cpus=cpus_per_study, num_gpus=1 if gpu else 0, max_retries=0)(process_case)
        pending = [task.remote(cfg, c) for c in cases]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


def run_all(cfg: RunConfig, cases: list[Case], *, workers: int = 1, ray_address: str | None = None,
            gpu: bool = False, cpus_per_study: float = 2.0,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every study (finished ones are only read back); returns the case records in manifest order."""
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in cfg.runs_dir.glob(".partial-*"):  # left by an interrupted run: those studies run again
        shutil.rmtree(stale, ignore_errors=True)
    progress = Progress(len(cases), workers if ray_address is None else 1)
    models = validated_models(cfg)
    finished = [is_finished(cfg, c.case_id, models) for c in cases]
    stale = sum(not f and (cfg.runs_dir / c.case_id / "result.json").is_file() for c, f in zip(cases, finished))
    print(f"[validation] {len(cases)} studies, {sum(finished)} already finished, {stale} to run again (other "
          f"models, unreadable result or --retry-errors)",
          file=sys.stderr, flush=True)
    if ray_address is None:  # studies run at once share the CPUs (app.launch.threads_per_run)
        cfg = replace(cfg, extra_env={**launch.threads_per_run(min(workers, len(cases) - sum(finished))),
                                      **cfg.extra_env})
    it = (_iter_ray(cfg, cases, ray_address, gpu, cpus_per_study) if ray_address
          else _iter_pool(cfg, cases, workers))
    by_id: dict[str, dict[str, Any]] = {}
    for item in it:
        by_id[item["record"]["case_id"]] = item["record"]
        progress.update(item)
        if on_result is not None:
            on_result(item)
    missing = [c.case_id for c in cases if c.case_id not in by_id]
    if missing:  # cannot happen unless a worker died: never drop a study silently
        raise RuntimeError(f"no record for studies {missing}")
    return [by_id[c.case_id] for c in cases]
