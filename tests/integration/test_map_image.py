"""The built MAP image, run as an orchestrator runs it: no network, read-only root and input, non-root user.

Selected by ``make map-test`` (which builds the image and sets MAP_IMAGE); without MAP_IMAGE every test here
is skipped; ``make test`` ignores this file, so it never builds or runs images. Needs podman (or PODMAN=docker)
and, on the development machines, packaging/containers.conf + packaging/storage.conf (used when CONTAINERS_CONF /
CONTAINERS_STORAGE_CONF are unset).

The image also runs once through the official runner, ``monai-deploy run`` (holoscan-cli 4.2.0), on podman
through the ``docker`` shim of packaging/docker-shim (packaging/monai_deploy_run.sh, as ``make map-run`` does).
Both runs must give the findings of ``python -m app`` in the development venv on the same study.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from core.run_state import output_files
from core.status import Status
from pydicom.uid import UID as DicomUID

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("MAP_IMAGE", "")
UID = os.environ.get("MAP_UID", "1000")
PODMAN = os.environ.get("PODMAN", "podman")
MONAI_DEPLOY = os.environ.get("MONAI_DEPLOY", str(Path(sys.executable).parent / "monai-deploy"))
APP_JSON = json.loads((ROOT / "MAP_manifest" / "app.json").read_text())
PKG_JSON = json.loads((ROOT / "MAP_manifest" / "pkg.json").read_text())

pytestmark = [pytest.mark.system, pytest.mark.skipif(not IMAGE, reason="MAP_IMAGE not set: run `make map-test`")]


def podman(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if PODMAN == "podman":
        env.setdefault("CONTAINERS_CONF", str(ROOT / "packaging" / "containers.conf"))
        env.setdefault("CONTAINERS_STORAGE_CONF", str(ROOT / "packaging" / "storage.conf"))
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def run_image(*args: str, mounts: tuple[str, ...] = (), timeout: int = 120) -> subprocess.CompletedProcess:
    """``podman run`` as a hosting service would: --network none, --read-only root, tmpfs /tmp, non-root."""
    cmd = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", f"{UID}:{UID}"]
    for m in mounts:
        cmd += ["-v", m]
    return podman(*cmd, IMAGE, *args, timeout=timeout)


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the container user (UID) must be able to write here
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated phantom study with a tumour (the DICOM folder of case C0001)."""
    from training.phantom import generate_cohort

    out = tmp_path_factory.mktemp("map_study")
    generate_cohort(out, n=1, seed=20261127, classes=["chordoma"])
    return out / "C0001" / "dicom"


@pytest.fixture(scope="module")
def image_run(study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = writable_dir(tmp_path_factory.mktemp("map_out") / "output")
    proc = run_image(mounts=(f"{study}:/var/holoscan/input:ro", f"{out}:/var/holoscan/output"),
                     timeout=APP_JSON["timeout"])
    return proc, out


def test_image_metadata() -> None:
    proc = podman("image", "inspect", IMAGE)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == APP_JSON["version"]
    assert labels["org.opencontainers.image.title"]
    assert config["Entrypoint"] == ["/var/holoscan/tools"]
    assert config["User"] not in ("", "root", "0")
    env = dict(e.split("=", 1) for e in config["Env"])
    for key, value in APP_JSON["environment"].items():
        assert env[key] == value, key


def test_show_prints_both_manifests() -> None:
    proc = run_image("show")
    assert proc.returncode == 0, proc.stderr
    app_part = proc.stdout.split("== app.json ==")[1].split("== pkg.json ==")[0]
    pkg_part = proc.stdout.split("== pkg.json ==")[1]
    app_doc = json.loads(app_part[app_part.index("{"):app_part.rindex("}") + 1])
    pkg_doc = json.loads(pkg_part[pkg_part.index("{"):pkg_part.rindex("}") + 1])
    assert app_doc == APP_JSON
    assert pkg_doc == PKG_JSON


def test_runs_offline_on_a_generated_study(image_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = image_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] in (Status.TUMOUR_FOUND, Status.NO_TUMOUR, Status.NOT_APPLICABLE), result.get("reason")


@pytest.fixture(scope="module")
def local_result(study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """result.json of `python -m app` in the development venv on the same study (same pins, same models)."""
    from tests.conftest import run_app

    local = run_app(study, tmp_path_factory.mktemp("local_out") / "output", ROOT / "models")
    assert local.returncode == 0, local.stderr[-2000:]
    return local.result


@pytest.fixture(scope="module")
def runner_run(study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """The image run by `monai-deploy run` (holoscan-cli 4.2.0) through the docker shim over podman."""
    if PODMAN != "podman":
        pytest.skip("the docker shim is for podman hosts; with Docker, run `monai-deploy run` itself")
    work = tmp_path_factory.mktemp("map_runner")
    out = writable_dir(work / "output")  # the script also hands it to MAP_UID when run as root
    env = {**os.environ, "MAP_UID": UID, "MONAI_DEPLOY": MONAI_DEPLOY, "MAP_RUN_HOME": str(work / "home")}
    env.setdefault("CONTAINERS_CONF", str(ROOT / "packaging" / "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(ROOT / "packaging" / "storage.conf"))
    proc = subprocess.run([str(ROOT / "packaging" / "monai_deploy_run.sh"), IMAGE, str(study), str(out)],
                          capture_output=True, text=True, timeout=APP_JSON["timeout"] + 60, env=env)
    return proc, out


#: ``dicom_outputs`` keys that differ between two runs of the same study by design: each run creates new DICOM
#: instances in a new series, with UIDs of their own
NEW_PER_RUN = ("sop_instance_uid", "series_instance_uid")


def findings(result: dict) -> dict:
    """What a run found: result.json without the timings and without the UIDs of the DICOM objects the run created
    (both differ from run to run; :func:`assert_new_instances` checks the UIDs)."""
    out = {k: v for k, v in result.items() if k != "timings_s"}
    if "dicom_outputs" in out:
        out["dicom_outputs"] = [{k: v for k, v in o.items() if k not in NEW_PER_RUN} for o in out["dicom_outputs"]]
    return out


def assert_new_instances(got: dict, want: dict) -> None:
    """Every DICOM object of ``got`` has valid UIDs that are not ``want``'s: a second run of the same study creates
    new instances, as a PACS needs, rather than copies of the first run's."""
    for g, w in zip(got["dicom_outputs"], want["dicom_outputs"], strict=True):
        for key in NEW_PER_RUN:
            assert g[key] != w[key], (g["file"], key)
            assert DicomUID(g[key]).is_valid, (g["file"], key, g[key])


def assert_same_findings(got: object, want: object, where: str = "result") -> None:
    """Equal, numbers to 1e-4 (the image and the venv run the same wheels, models and code)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_same_findings(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_findings(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, abs=1e-4, rel=1e-6), where
    else:
        assert got == want, where


def test_same_result_as_the_local_run(image_run: tuple[subprocess.CompletedProcess, Path], local_result: dict) -> None:
    """The image (same pins, same models) answers what `python -m app` answers in the development venv."""
    proc, out = image_run
    assert proc.returncode == 0
    in_image = json.loads((out / "result.json").read_text())
    assert_same_findings(findings(in_image), findings(local_result))
    assert_new_instances(in_image, local_result)


def test_monai_deploy_run_gives_the_local_result(runner_run: tuple[subprocess.CompletedProcess, Path],
                                                 local_result: dict) -> None:
    """`monai-deploy run` (the MONAI Deploy CLI's runner) runs the image and gets the findings of `python -m app`."""
    proc, out = runner_run
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "exited with code 0" in proc.stdout + proc.stderr, log  # the runner's own report
    by_runner = json.loads((out / "result.json").read_text())
    assert_same_findings(findings(by_runner), findings(local_result))
    assert_new_instances(by_runner, local_result)
    written = output_files(by_runner["outputs"])   # key_images is a list of files (result.json schema 2)
    assert len(written) >= 3
    for name in written:
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in out.iterdir()) == sorted(["result.json", *written])


def test_extract_copies_app_config_models_docs(tmp_path: Path) -> None:
    export = writable_dir(tmp_path / "export")
    proc = run_image("extract", mounts=(f"{export}:/var/run/holoscan/export",))
    assert proc.returncode == 0, proc.stderr
    assert (export / "app" / "__main__.py").is_file()
    assert (export / "app" / "app" / "__main__.py").is_file()
    assert sorted(p.name for p in (export / "config").iterdir()) == ["app.json", "app.yaml", "pkg.json"]
    assert json.loads((export / "config" / "pkg.json").read_text()) == PKG_JSON
    assert sorted(p.name for p in (export / "models").iterdir()) == sorted(PKG_JSON["models"])
    for name in PKG_JSON["models"]:
        shipped = (ROOT / "models" / name / "model.ts").read_bytes()
        assert (export / "models" / name / "model.ts").read_bytes() == shipped
    assert (export / "docs" / "deploy.md").is_file()
    shutil.rmtree(export)
