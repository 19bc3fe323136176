"""The MAP tooling scripts, without building or running an image: the system-package check of `make map`
(packaging/map_system_deps.sh) and the `docker` shim over podman used for `monai-deploy run`
(packaging/docker-shim/docker). Both are bash; the commands they call are replaced by stubs on PATH."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DEPS = ROOT / "packaging" / "map_system_deps.sh"
SHIM = ROOT / "packaging" / "docker-shim" / "docker"
BASH = "/bin/bash"


def stub(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def run_deps(bin_dir: Path) -> subprocess.CompletedProcess:
    """The check with PATH = bin_dir only: the real podman/runc/debootstrap of this machine are hidden."""
    return subprocess.run([BASH, str(DEPS)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30)


@pytest.fixture()
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def test_deps_all_present_is_silent(bin_dir: Path) -> None:
    for name in ("podman", "runc", "debootstrap"):
        stub(bin_dir, name)
    stub(bin_dir, "id", "echo 0")
    proc = run_deps(bin_dir)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_deps_not_root_one_line_names_packages_and_command(bin_dir: Path) -> None:
    stub(bin_dir, "podman")
    stub(bin_dir, "id", "echo 1000")
    stub(bin_dir, "apt-get", f"echo called >> {bin_dir}/apt.log")
    proc = run_deps(bin_dir)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "runc debootstrap" in lines[0]
    assert "apt-get install -y --no-install-recommends runc debootstrap" in lines[0]
    assert not (bin_dir / "apt.log").exists()  # nothing installed without root


def test_deps_root_installs_with_apt_get(bin_dir: Path) -> None:
    """As root the missing packages are installed with apt-get; the stub 'installs' them by creating stubs."""
    stub(bin_dir, "id", "echo 0")
    stub(bin_dir, "apt-get", f'echo "$*" >> {bin_dir}/apt.log\n'
                             f'if [ "$1" = install ]; then for p in podman runc debootstrap; do '
                             f'printf "#!{BASH}\\nexit 0\\n" > {bin_dir}/$p; /bin/chmod 755 {bin_dir}/$p; done; fi')
    proc = run_deps(bin_dir)
    assert proc.returncode == 0, proc.stderr
    assert "installing system packages podman runc debootstrap" in proc.stdout
    calls = (bin_dir / "apt.log").read_text().splitlines()
    assert calls == ["install -y -qq --no-install-recommends podman runc debootstrap"]


def test_deps_root_still_missing_after_install_fails(bin_dir: Path) -> None:
    stub(bin_dir, "id", "echo 0")
    stub(bin_dir, "apt-get", f'echo "$*" >> {bin_dir}/apt.log')
    proc = run_deps(bin_dir)
    assert proc.returncode == 1
    assert "still not on PATH" in proc.stderr


def shim(*words: str) -> list[str]:
    """The podman command line the shim would run (podman replaced by echo), as words."""
    env = {**os.environ, "DOCKER_SHIM_PODMAN": "echo", "CONTAINERS_CONF": str(ROOT / "packaging" / "containers.conf")}
    env.pop("DOCKER_SHIM_LOG", None)
    proc = subprocess.run([str(SHIM), *words], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def host_hard_limit(name: str) -> str:
    """The hard limit as the shim's --ulimit writes it (-1 = unlimited)."""
    v = subprocess.run(["prlimit", "--pid", str(os.getpid()), f"--{name}", "--output=HARD", "--noheadings", "--raw"],
                       capture_output=True, text=True, check=True).stdout.strip()
    return "-1" if v == "unlimited" else v


def test_shim_passes_other_commands_unchanged() -> None:
    assert shim("image", "inspect", "x:1") == ["image", "inspect", "x:1"]
    assert shim("container", "start", "--attach", "abc") == ["container", "start", "--attach", "abc"]


@pytest.mark.parametrize("prefix", [["create"], ["container", "create"]])
def test_shim_create_translations(prefix: list[str]) -> None:
    """The runner's create: no --runtime nvidia, ulimits within the host's, nofile/nproc from containers.conf."""
    words = [*prefix, "--cap-add", "CAP_SYS_PTRACE", "--env", "A=B", "--runtime", "nvidia",
             "--ulimit", "memlock=-1", "--ulimit", "stack=67108864", "--user", "1000:1000", "img:1", "--config", "x"]
    got = shim(*words)
    assert "--runtime" not in got and "nvidia" not in got
    ulimits = [got[i + 1] for i, w in enumerate(got) if w == "--ulimit"]
    assert ulimits[:2] == ["nofile=20000:20000", "nproc=32768:32768"]  # packaging/containers.conf
    memlock = host_hard_limit("memlock")
    stack = host_hard_limit("stack")
    stack = "67108864" if stack == "-1" else str(min(int(stack), 67108864))
    assert ulimits[2:] == [f"memlock={memlock}:{memlock}", f"stack={stack}:{stack}"]
    # every other word unchanged and in order, the image and its command last
    rest = [w for i, w in enumerate(got) if w != "--ulimit" and (i == 0 or got[i - 1] != "--ulimit")]
    assert rest == [*prefix, "--cap-add", "CAP_SYS_PTRACE", "--env", "A=B", "--user", "1000:1000", "img:1",
                    "--config", "x"]


def test_shim_create_without_ulimits_adds_none() -> None:
    assert shim("create", "img:1") == ["create", "img:1"]
