"""Loading the shipped models: TorchScript weights plus the ``metadata.json`` that says how to use them.

A model folder is ``<models root>/<name>/`` holding ``model.ts`` (TorchScript) and ``metadata.json``.
Everything inference needs (labels, spacing, orientation, intensity window, sliding-window size and overlap,
tabular feature order and statistics, class order, version) is read from the metadata, never hard-coded: a
:class:`core.model_metadata.ModelMetadata`, read only by :func:`read_metadata` and written only by
:func:`write_model`. The file's
sha256 is checked against the metadata *before* it is loaded; TorchScript archives are loaded with
``torch.jit.load``, which restores a scripted graph and its tensors and never unpickles arbitrary Python
objects.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.model_metadata import MODEL_FILE, MetadataError, ModelError, ModelMetadata

__all__ = ["MODEL_FILE", "METADATA_FILE", "LoadedModel", "MetadataError", "ModelError", "ModelMetadata",
           "load_model", "load_variant", "pick_device", "read_metadata", "sha256_of", "write_model"]

METADATA_FILE = "metadata.json"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_metadata(folder: Path) -> ModelMetadata:
    """Parse ``folder/metadata.json`` (:meth:`ModelMetadata.from_dict`).

    Raises:
        ModelError: the file is absent or not JSON; :class:`MetadataError` (a ModelError) when a value is
            missing or invalid, with its key and the file in a one-line reason.
    """
    path = Path(folder) / METADATA_FILE
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model metadata not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"model metadata is not valid JSON: {path}: {e.msg}") from None
    try:
        return ModelMetadata.from_dict(d)
    except MetadataError as e:
        raise MetadataError(e.key, f"{e.reason} (model metadata {path})") from None


@dataclass
class LoadedModel:
    """A TorchScript module in eval mode on ``device`` with its metadata."""

    name: str
    module: torch.jit.ScriptModule
    metadata: ModelMetadata
    device: torch.device
    folder: Path

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def sha256(self) -> str:
        return self.metadata.sha256


def pick_device(prefer: str = "auto") -> torch.device:
    """``cuda`` when available (or requested), else ``cpu``."""
    if prefer == "cpu":
        return torch.device("cpu")
    if prefer in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if prefer == "cuda":
        raise ModelError("CUDA was requested but no GPU is available")
    return torch.device("cpu")


def load_model(models_root: Path, name: str, device: torch.device | None = None) -> LoadedModel:
    """Verify and load ``models_root/name``.

    Raises:
        ModelError: missing folder or file, metadata name mismatch, or sha256 mismatch (checked before loading).
    """
    folder = Path(models_root) / name
    if not folder.is_dir():
        raise ModelError(f"model '{name}' not found in {models_root}")
    meta = read_metadata(folder)
    if meta.name != name:
        raise ModelError(f"model folder '{name}' holds metadata for '{meta.name}'")
    weights = folder / meta.file
    if not weights.is_file():
        raise ModelError(f"model '{name}': weights file {weights.name} missing")
    digest = sha256_of(weights)
    if digest != meta.sha256:
        raise ModelError(
            f"model '{name}': sha256 of {weights.name} is {digest[:12]}..., metadata says {meta.sha256[:12]}...; "
            "refusing to load"
        )
    device = device or pick_device()
    module = torch.jit.load(  # type: ignore[no-untyped-call]  # torch.jit.load is unannotated
        str(weights), map_location=device)
    module.eval()
    return LoadedModel(name=name, module=module, metadata=meta, device=device, folder=folder)


def write_model(folder: Path, module: torch.jit.ScriptModule, metadata: ModelMetadata) -> ModelMetadata:
    """Save TorchScript ``module`` to ``folder/model.ts`` and ``metadata`` (:meth:`ModelMetadata.to_dict`, its
    ``file`` and ``sha256`` set to those of the weights just written) beside it: the one writer of metadata.json.

    Returns the metadata as written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / MODEL_FILE
    torch.jit.save(module, str(weights))
    meta = replace(metadata, file=MODEL_FILE, sha256=sha256_of(weights))
    (folder / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return meta


def load_variant(model: LoadedModel, variant: str) -> torch.jit.ScriptModule:
    """Load an additional TorchScript file listed in the classifier's ``variants`` (sha256 checked first)."""
    entry = model.metadata.clf.variants.get(variant)
    if entry is None:
        raise ModelError(f"model '{model.name}' has no variant '{variant}'")
    path = model.folder / entry.file
    if not path.is_file():
        raise ModelError(f"model '{model.name}': variant file {entry.file} missing")
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise ModelError(f"model '{model.name}': sha256 of {entry.file} does not match its metadata; "
                         "refusing to load")
    module = torch.jit.load(  # type: ignore[no-untyped-call]  # torch.jit.load is unannotated
        str(path), map_location=model.device)
    module.eval()
    return module
