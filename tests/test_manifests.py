"""MAP manifests, app.yaml and Dockerfile agree with each other, the MAP spec and holoscan-cli 4.2.0.

Checks run on the repository files only (no image build): JSON Schema validation of
MAP_manifest/{app,pkg}.json, one version everywhere, the SDK pins, the models named in pkg.json present as
models/<name>/{model.ts,metadata.json}, and the Dockerfile putting every part where the manifests say.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "MAP_manifest"
MODEL_FILES = ("model.ts", "metadata.json")
#: keys of app.yaml's `models:` section that are settings, not model folder names
MODEL_SETTING_KEYS = {"device"}
EXPECTED_MODELS = {"hip_bone_seg", "tumour_seg", "tumour_classifier"}


# ------------------------------------------------------------------------------------------------ helpers
def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def schema_errors(doc: dict, schema_path: Path) -> list[str]:
    """Messages of every JSON Schema (draft 2020-12) violation of ``doc``; empty when valid."""
    schema = load_json(schema_path)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def missing_models(pkg: dict, models_dir: Path) -> list[str]:
    """Problems with the models that ``pkg`` (a pkg.json document) names, checked against ``models_dir``
    (the repository's ``models/``, copied to ``pkg['modelRoot']`` in the image). Empty when every model
    ``<name>`` has ``models_dir/<name>/model.ts`` and ``metadata.json`` and its pkg.json path is
    ``modelRoot/<name>``."""
    problems = []
    root = str(pkg.get("modelRoot", "")).rstrip("/")
    for name, path in sorted((pkg.get("models") or {}).items()):
        if str(path).rstrip("/") != f"{root}/{name}":
            problems.append(f"{name}: pkg.json path {path!r} is not {root}/{name}")
        for fname in MODEL_FILES:
            if not (models_dir / name / fname).is_file():
                problems.append(f"{name}: {models_dir / name / fname} is missing")
    return problems


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_env(instrs: list[tuple[str, str]]) -> dict[str, str]:
    """ENV assignments of the Dockerfile's last stage (KEY=VALUE form)."""
    stages = [i for i, (w, _) in enumerate(instrs) if w == "FROM"]
    env: dict[str, str] = {}
    for word, rest in instrs[stages[-1]:]:
        if word == "ENV":
            for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', rest):
                env[m.group(1)] = m.group(2).strip('"')
    return env


def dockerfile_copies(instrs: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of the last stage that copies from the build context."""
    stages = [i for i, (w, _) in enumerate(instrs) if w == "FROM"]
    out = []
    for word, rest in instrs[stages[-1]:]:
        if word == "COPY":
            parts = rest.split()
            if any(p.startswith("--from") for p in parts):
                continue
            parts = [p for p in parts if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


def copied_to(copies: list[tuple[list[str], str]], dest: str) -> list[str]:
    """Sources copied to ``dest`` (trailing slashes ignored)."""
    return [s for srcs, d in copies if d.rstrip("/") == dest.rstrip("/") for s in srcs]


def local_packages_imported(root: Path, start: str = "app") -> set[str]:
    """Top-level packages/modules of the repository that ``start`` imports, transitively (by reading the
    source, not importing it)."""
    local = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    local |= {p.stem for p in root.glob("*.py")}
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in local:
            continue
        seen.add(name)
        files = list((root / name).rglob("*.py")) if (root / name).is_dir() else [root / f"{name}.py"]
        for f in files:
            for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
                if isinstance(node, ast.Import):
                    todo += [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    todo.append(node.module.split(".")[0])
    return seen


def norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(root: Path, packages: set[str]) -> set[str]:
    """Top-level modules outside the standard library and the repository that ``packages`` import."""
    local = {p.name for p in root.iterdir() if p.is_dir()} | {p.stem for p in root.glob("*.py")}
    found = set()
    for pkg in packages:
        for f in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                found |= {n for n in names if n not in local and n not in sys.stdlib_module_names}
    return found


def requirement_pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^\s*{re.escape(name)}\s*==\s*([^\s;#]+)", line, re.I)
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned (==) in requirements.txt")


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def app_json() -> dict:
    return load_json(MANIFESTS / "app.json")


@pytest.fixture(scope="module")
def pkg_json() -> dict:
    return load_json(MANIFESTS / "pkg.json")


@pytest.fixture(scope="module")
def app_yaml() -> dict:
    return yaml.safe_load((ROOT / "app" / "app.yaml").read_text())


@pytest.fixture(scope="module")
def instrs() -> list[tuple[str, str]]:
    return dockerfile_instructions(ROOT / "Dockerfile")


# ----------------------------------------------------------------------------------------- schema checks
@pytest.mark.parametrize("name", ["app", "pkg"])
def test_manifest_valid_against_schema(name: str) -> None:
    errors = schema_errors(load_json(MANIFESTS / f"{name}.json"), MANIFESTS / "schema" / f"{name}.schema.json")
    assert errors == []


def test_schemas_reject_what_holoscan_cli_would_not_write(app_json: dict, pkg_json: dict) -> None:
    bad_app = {**app_json, "command": "python3 /opt/holoscan/app", "timeout": -1}
    bad_app.pop("sdkVersion")
    errs = schema_errors(bad_app, MANIFESTS / "schema" / "app.schema.json")
    assert len(errs) == 3, errs
    bad_pkg = {**pkg_json, "models": {"tumour_seg": "models/tumour_seg"},
               "resources": {**pkg_json["resources"], "memory": "8 GB", "gpuMemroy": "1Gi"}}
    errs = schema_errors(bad_pkg, MANIFESTS / "schema" / "pkg.schema.json")
    assert len(errs) == 3, errs


# --------------------------------------------------------------------------------------------- agreement
def holoscan_cli_manifests(tmp: Path, pkg: dict, timeout: int) -> tuple[dict, dict]:
    """app.json and pkg.json as holoscan-cli 4.2.0's own code builds them from app/app.yaml (the part of
    `monai-deploy package` before the docker build), for an application folder like build/map_app and a
    models folder with the models ``pkg`` names."""
    from holoscan_cli.packager.config_reader import ApplicationConfiguration
    from holoscan_cli.packager.models import Models
    from holoscan_cli.packager.parameters import PackageBuildParameters

    (tmp / "map_app").mkdir()
    (tmp / "map_app" / "__main__.py").write_text("")
    for name in pkg["models"]:
        (tmp / "models" / name).mkdir(parents=True)
        (tmp / "models" / name / "model.ts").write_bytes(b"")
    params = PackageBuildParameters()
    params.application = tmp / "map_app"
    params.timeout = timeout
    params.models = Models().build(tmp / "models")
    config = ApplicationConfiguration()
    config.read(ROOT / "app" / "app.yaml")
    app = json.loads(json.dumps(config.populate_app_manifest(params).data, default=str))
    pkg_doc = json.loads(json.dumps(config.populate_package_manifest(params).data, default=str))
    # set by PackagingArguments from the installed SDK and the --platform x86_64 choice
    app["sdk"], app["sdkVersion"] = "monai-deploy", requirement_pin("monai-deploy-app-sdk")
    pkg_doc["platformConfig"] = "dgpu"
    return app, pkg_doc


def test_manifests_equal_what_holoscan_cli_generates(tmp_path: Path, app_json: dict, pkg_json: dict) -> None:
    app, pkg = holoscan_cli_manifests(tmp_path, pkg_json, app_json["timeout"])
    assert pkg == pkg_json
    # holoscan-cli writes HOLOSCAN_INPUT_PATH/OUTPUT_PATH relative to workingDirectory ("input/"); ours are
    # the same folders as absolute paths (as its Dockerfile's ENV has them).
    work = app["workingDirectory"]
    for key in ("HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH"):
        value = app["environment"][key]
        app["environment"][key] = value if value.startswith("/") else f"{work}/{value.rstrip('/')}"
    assert app == app_json


def test_one_version_everywhere(app_json: dict, pkg_json: dict, app_yaml: dict, instrs) -> None:
    version = str(app_yaml["application"]["version"])
    assert app_json["version"] == version
    assert pkg_json["version"] == version
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for w, rest in instrs if w == "ARG" and "=" in rest}
    assert args["MAP_VERSION"] == version, "Dockerfile ARG MAP_VERSION default"


def test_sdk_versions_match_requirements(app_json: dict) -> None:
    assert app_json["sdk"] == "monai-deploy"
    assert app_json["sdkVersion"] == requirement_pin("monai-deploy-app-sdk")
    text = (ROOT / "Dockerfile").read_text()
    assert f'org.monai.deploy.app-sdk="{requirement_pin("monai-deploy-app-sdk")}"' in text
    assert f'org.nvidia.holoscan="{requirement_pin("holoscan-cu13")}"' in text


def test_app_yaml_uses_keys_holoscan_cli_reads(app_yaml: dict, app_json: dict, pkg_json: dict, instrs) -> None:
    application = app_yaml["application"]
    for key in ("title", "version", "input-formats", "output-formats"):
        assert application.get(key), f"application.{key} missing or empty"
    ignored = {"inputFormats", "outputFormats", "input_formats", "output_formats"} & set(application)
    assert not ignored, f"holoscan-cli 4.2.0 ignores {ignored}: use kebab-case"
    assert app_json["input"]["formats"] == application["input-formats"]
    assert app_json["output"]["formats"] == application["output-formats"]
    assert pkg_json["resources"] == app_yaml["resources"], "holoscan-cli copies app.yaml resources verbatim"
    labels = " ".join(rest for w, rest in instrs if w == "LABEL")
    assert f'org.opencontainers.image.title="{application["title"]}"' in labels


def test_environment_paths_agree(app_json: dict, pkg_json: dict, instrs) -> None:
    env = app_json["environment"]
    work = app_json["workingDirectory"].rstrip("/")
    assert env["HOLOSCAN_WORKDIR"].rstrip("/") == work
    assert env["HOLOSCAN_INPUT_PATH"].rstrip("/") == f"{work}/{app_json['input']['path'].strip('/')}"
    assert env["HOLOSCAN_OUTPUT_PATH"].rstrip("/") == f"{work}/{app_json['output']['path'].strip('/')}"
    assert pkg_json["applicationRoot"] == env["HOLOSCAN_APPLICATION"]
    assert pkg_json["modelRoot"] == env["HOLOSCAN_MODEL_PATH"]
    image_env = dockerfile_env(instrs)
    for key, value in env.items():
        assert image_env.get(key) == value, f"Dockerfile ENV {key}"
    assert image_env.get("HOLOSCAN_TIMEOUT") == str(app_json["timeout"])


def test_timeout_set_and_documented(app_json: dict) -> None:
    timeout = app_json["timeout"]
    assert 0 < timeout <= 3600
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert f"--timeout {timeout}" in deploy, "docs/deploy.md's monai-deploy package command"
    for wf in sorted((ROOT / "packaging" / "workflows").glob("*.json")):
        text = wf.read_text()
        assert str(timeout) in text or str(-(-timeout // 60)) in text, f"{wf.name} states no matching timeout"


# -------------------------------------------------------------------------------------------------- models
def test_models_named_in_pkg_json_exist() -> None:
    """Fails until the trained models are in models/<name>/{model.ts,metadata.json}."""
    pkg = load_json(MANIFESTS / "pkg.json")
    assert set(pkg["models"]) == EXPECTED_MODELS
    assert missing_models(pkg, ROOT / "models") == []


def test_missing_model_is_reported(tmp_path: Path) -> None:
    pkg = load_json(MANIFESTS / "pkg.json")
    models = tmp_path / "models"
    for name in pkg["models"]:
        (models / name).mkdir(parents=True)
        for fname in MODEL_FILES:
            (models / name / fname).write_bytes(b"x")
    assert missing_models(pkg, models) == []
    shutil.rmtree(models / "tumour_seg")
    (models / "hip_bone_seg" / "metadata.json").unlink()
    problems = missing_models(pkg, models)
    assert len(problems) == 3, problems
    assert sum("tumour_seg" in p for p in problems) == 2
    assert any("hip_bone_seg" in p and "metadata.json" in p for p in problems)
    assert missing_models({**pkg, "models": {**pkg["models"], "extra": "/elsewhere/extra"}}, models)


def test_models_folder_is_what_holoscan_cli_would_package(pkg_json: dict, app_yaml: dict) -> None:
    """holoscan-cli makes one model per sub-folder of models/, and treats the whole folder as ONE model
    named 'models' if any plain file lies directly in it."""
    models_dir = ROOT / "models"
    stray = [p.name for p in models_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert stray in ([], ["README.md"]), "plain files directly in models/ break holoscan-cli's model scan"
    # ... so the model card is left out of what `monai-deploy package -m` sees and moved to the docs in the image
    assert 'for d in "$ROOT"/models/*/' in (ROOT / "packaging" / "stage_map_app.sh").read_text()
    assert "mv /opt/holoscan/models/README.md /opt/holoscan/docs/" in (ROOT / "Dockerfile").read_text()
    folders = {p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert folders <= set(pkg_json["models"]), "model folders missing from pkg.json"
    used = {v for k, v in (app_yaml.get("models") or {}).items() if k not in MODEL_SETTING_KEYS}
    assert used <= set(pkg_json["models"]), "app.yaml models: names not in pkg.json"


# ---------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_layout(instrs, app_json: dict) -> None:
    copies = dockerfile_copies(instrs)
    assert copied_to(copies, "/opt/holoscan/models") == ["models"]
    assert sorted(copied_to(copies, "/etc/holoscan/")) == ["MAP_manifest/app.json", "MAP_manifest/pkg.json"]
    assert copied_to(copies, app_json["environment"]["HOLOSCAN_CONFIG_PATH"]) == ["app/app.yaml"]
    assert copied_to(copies, "/var/holoscan/tools") == ["packaging/tools"]
    assert copied_to(copies, "/opt/holoscan/app/__main__.py") == ["packaging/map_main.py"]
    assert json.loads(app_json["command"]) == ["python3", "/opt/holoscan/app"]
    assert ("ENTRYPOINT", '["/var/holoscan/tools"]') in instrs
    user = [rest for w, rest in instrs if w == "USER"][-1]
    assert user not in ("root", "0", "0:0")


def test_dockerfile_copies_every_package_the_app_imports(instrs) -> None:
    copies = dockerfile_copies(instrs)
    needed = local_packages_imported(ROOT, "app")
    assert {"app", "core"} <= needed
    for pkg in sorted(needed):
        assert copied_to(copies, f"/opt/holoscan/app/{pkg}") == [pkg], f"Dockerfile does not copy {pkg}/"
    ignore = (ROOT / ".dockerignore").read_text().split()  # an allowlist: `*` then `!dir/`
    for src in {s.split("/")[0] for srcs, _ in copies for s in srcs}:
        assert f"!{src}/" in ignore or f"!{src}" in ignore, f".dockerignore keeps {src} out of the context"


def test_image_requirements_cover_what_the_app_imports() -> None:
    """packaging/requirements-map.txt (the image's packages, pinned by requirements.txt) holds a distribution
    for every third-party module the application imports."""
    listed = set()
    for line in (ROOT / "packaging" / "requirements-map.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
        if "==" not in line:
            requirement_pin(name)  # raises when requirements.txt does not pin it
        listed.add(norm_dist(name))
    assert {"monai-deploy-app-sdk", "holoscan-cu13", "torch", "nvidia-cuda-runtime"} <= listed
    dists = packages_distributions()
    for module in sorted(third_party_imports(ROOT, local_packages_imported(ROOT, "app"))):
        providers = {norm_dist(d) for d in dists.get(module, [])}
        assert providers, f"{module}: not installed in this venv"
        assert providers & listed, f"{module} (from {sorted(providers)}) missing in packaging/requirements-map.txt"
