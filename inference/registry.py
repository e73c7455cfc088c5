"""The model registry: ``[[model]]`` entries -> loaded, checksummed models on their devices.

* ``torchscript``: ``torch.jit.load`` of ``path``.
* ``state_dict``: a named pure-torch architecture (``inference.architectures``)
  with the weights of ``path`` (``torch.load(weights_only=True)``, strict keys).
* ``kserve``: a model served over the KServe v2 / Triton HTTP protocol
  (``inference.remote``); its checksum is the SHA-256 of the server's model
  metadata, since the weights are not ours to hash.
* ``builtin``: ``demo-cxr`` (a small CNN with fixed seeded weights; its every
  output is labelled DEMO) or ``dicom-qa`` (rules; see ``inference.dicom_qa``).

Every file is hashed (SHA-256) before it is loaded; a configured ``sha256``
that differs refuses the model (``ChecksumMismatch``). Built-ins are hashed
too (the demo weights; the rules' source and settings). A loaded pixel model
makes one dry forward pass to prove that its input and output sizes agree with
the configuration. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

from engine.config.inference import LabelSpec, ModelConfig
from engine.logs import event
from engine.store.inference import ModelLoad
from inference.errors import (
    ChecksumMismatch,
    InferenceTimeout,
    ModelLoadError,
    ServerUnavailable,
)
from inference.models import DemoModel, InferenceModel, TensorModel

log = logging.getLogger("radbridge.inference")

DEMO_SEED = 20260401
DEMO_LABELS = [LabelSpec.model_validate({"code": f"DEMO-{c}", "display": f"demo output {c}",
                                         "system": "99RADBRIDGE"}) for c in "ABCD"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file ({exc.strerror})") from exc
    return h.hexdigest()


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda:0`` when CUDA is present, else ``cpu``; an explicit CUDA device that
    is not there is a load error (a configuration mistake, not something to paper over)."""
    import torch

    if spec == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    index = int(spec.partition(":")[2] or 0)
    if not available or index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {spec} is not available")
    return f"cuda:{index}"


def _checked_file(config: ModelConfig) -> tuple[Path, str]:
    assert config.path is not None
    path = Path(config.path)
    digest = sha256_file(path)
    if config.sha256 and digest.lower() != config.sha256.lower():
        raise ChecksumMismatch(f"sha256 of {path.name} is {digest}, configured {config.sha256}")
    return path, digest


def _module_checksum(module: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_module(config: ModelConfig, labels: list[LabelSpec]) -> tuple[Any, str]:
    import torch

    from inference import architectures

    if config.builtin_name == "demo-cxr" and config.format == "builtin":
        module = architectures.seeded_demo_cnn(len(labels), config.input.channels, DEMO_SEED)
        return module, _module_checksum(module)
    path, digest = _checked_file(config)
    try:
        if config.format == "torchscript":
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; it works
                warnings.filterwarnings("ignore", r".*torch\.jit", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu"), digest
        assert config.architecture is not None
        module = architectures.build(config.architecture, len(labels), config.input.channels)
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return module, digest
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {config.format} {path.name}: "
                             f"{str(exc).splitlines()[0][:200]}") from exc


def _dry_run(model: TensorModel) -> None:
    """One forward pass on zeros: input and output sizes must agree with the config. A
    remote server found busy, gone or silent is raised as it is (the model may be fine:
    ``load_remote`` defers it) rather than refusing the model."""
    import numpy as np

    from inference.models import Prepared

    spec = model.config.input
    zeros = np.zeros((spec.channels, *spec.size), np.float32)
    try:
        (out,) = model.run_batch([Prepared("dry-run", zeros)])
    except (ServerUnavailable, InferenceTimeout):
        raise
    except Exception as exc:
        raise ModelLoadError(f"dry run failed: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    if len(out.outputs["probabilities"]) != len(model.labels):
        raise ModelLoadError("model outputs do not match the configured labels")


def load_model(config: ModelConfig) -> InferenceModel:
    """Load one model on its device; raises ``ModelLoadError`` (``ChecksumMismatch``)."""
    return _load(config)[0]


def _load(config: ModelConfig) -> tuple[InferenceModel, str]:
    """The model and its load status (``loaded``, or ``deferred`` for a remote model whose
    server did not answer yet)."""
    if config.format == "builtin" and config.builtin_name == "dicom-qa":
        from inference.dicom_qa import DicomQA

        return DicomQA(config), "loaded"
    if config.format == "kserve":
        from inference.remote import load_remote

        return load_remote(config, _dry_run)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("torch is not installed (pip install radbridge[inference])") \
            from exc
    demo = config.format == "builtin"
    labels = list(config.output.labels) or (DEMO_LABELS if demo else [])
    if not labels:
        raise ModelLoadError("output.labels is empty")
    device = resolve_device(config.device)
    module, digest = _load_module(config, labels)
    module = module.to(device).eval()
    model = (DemoModel if demo else TensorModel)(config, digest, device, module, labels)
    _dry_run(model)
    return model, "loaded"


def load_all(configs: list[ModelConfig]) -> tuple[dict[str, InferenceModel], dict[str, str],
                                                  list[ModelLoad]]:
    """Load every model; failures are kept by name (their jobs fail with the reason)."""
    models: dict[str, InferenceModel] = {}
    failed: dict[str, str] = {}
    loads: list[ModelLoad] = []
    for config in configs:
        try:
            model, status = _load(config)
        except ModelLoadError as exc:
            failed[config.name] = f"model unavailable: {exc}"
            loads.append(ModelLoad(config.name, config.version, config.format, "", config.device,
                                   "failed", str(exc)))
            event(log, "INF-401", "model not loaded", model=config.name, reason=str(exc),
                  level=logging.ERROR)
            continue
        models[config.name] = model
        loads.append(ModelLoad(config.name, config.version, config.format, model.checksum,
                               model.device, status))
        event(log, "INF-101", "model loaded", model=config.name, version=config.version,
              sha256=model.checksum[:16], device=model.device)
    return models, failed, loads
