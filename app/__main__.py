"""Command line: ``python -m app -i INPUT -o OUTPUT [-m MODELS] [-l LEVEL] [--config APP_YAML]``.

``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` are used when an argument is
absent (arguments win); models default to the repository's ``models/``. Prints the findings in a few lines;
the exit code is that of ``core.run_state`` (0 for tumour_found / no_tumour / not_applicable).

Run as a program, the process ends with :func:`exit_now` once the findings are printed: the interpreter's own
teardown of torch, MONAI and Holoscan would add about 2 s on 2 cores (bench/README.md) and does nothing the run
needs (the outputs are published or removed, the staging folder deleted and Holoscan's context destroyed before).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from app.runtime import preload_cudart, quiet_threads
from core.status import Status

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n\n")[0])
    ap.add_argument("-i", "--input", type=Path, default=os.environ.get("HOLOSCAN_INPUT_PATH"))
    ap.add_argument("-o", "--output", type=Path, default=os.environ.get("HOLOSCAN_OUTPUT_PATH"))
    ap.add_argument("-m", "--model", type=Path, default=os.environ.get("HOLOSCAN_MODEL_PATH") or REPO / "models")
    ap.add_argument("-l", "--log-level", default=os.environ.get("HOLOSCAN_LOG_LEVEL", "INFO"))
    ap.add_argument("--config", type=Path, default=None,
                    help="app.yaml (default: HOLOSCAN_CONFIG_PATH or app/app.yaml)")
    a = ap.parse_args(argv)
    if a.input is None or a.output is None:
        ap.error("input and output are required (-i/-o or HOLOSCAN_INPUT_PATH/HOLOSCAN_OUTPUT_PATH)")
    return a


def summary(doc: dict[str, Any], written: bool = True) -> str:
    """A few readable lines for the console (no patient identifiers); ``written``: the outputs were published."""
    status = doc.get("status")
    lines = [f"status: {status}"]
    if status == Status.ERROR:
        lines.append(f"reason: {doc.get('reason')}")
    if doc.get("predicted_class"):
        p = doc["probabilities"][doc["predicted_class"]]
        lines.append(f"predicted tumour type: {doc['predicted_class']} (p = {p:.2f})")
    t = doc.get("tumour")
    if t:
        u, v, w = t["location_hip_frame"]
        lines.append(f"tumour volume: {t['volume_ml']:.1f} mL; "
                     f"hip-frame location (u, v, w) = ({u:+.2f}, {v:+.2f}, {w:+.2f})")
    h = doc.get("hip_bone")
    if h:
        lines.append(f"hip bones: left {h['left_volume_ml']:.0f} mL, right {h['right_volume_ml']:.0f} mL"
                     + (" (cut by the scan edge)" if h.get("truncated") else ""))
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]
    from core.run_state import output_files
    outs = output_files(doc.get("outputs") or {})
    lines.append("outputs: " + (", ".join(outs + ["result.json"]) if written else "none written"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    logging.basicConfig(level=getattr(logging, str(a.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    quiet_threads()
    preload_cudart()
    from app.app import SacralTumourApp
    from app.config import load_config
    from core.run_state import EXIT_OUTPUT
    try:
        config = load_config(a.config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    app = SacralTumourApp(config=config, input_dir=a.input.resolve(), output_dir=a.output.resolve(),
                          models_dir=a.model.resolve())
    app.run()
    outcome = app.outcome
    del app  # Holoscan logs its teardown now, so that our one-line reason is the last line on stderr
    gc.collect()
    doc = outcome.get("document")
    if doc is None:
        print("error: the application graph ended without a result", file=sys.stderr)
        return 1
    text = summary(doc, written=outcome.get("exit_code") != EXIT_OUTPUT)
    if doc["status"] == Status.ERROR:
        print(f"error: {doc.get('reason')}", file=sys.stderr)
    print(text)
    return int(outcome.get("exit_code", 1))


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` at once: flush and close the log handlers and the standard streams, then
    ``os._exit``, skipping the interpreter's teardown (module finalisation and atexit handlers; none of ours).
    Only for the end of a command-line run, after :func:`main` returned."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
