"""What a loaded model is to the dispatcher: ``prepare`` in a pool thread, ``run_batch`` on
its device's thread.

``TensorModel`` wraps a torch module (TorchScript, a named architecture with
its state_dict, or the built-in demo network): series selection and
preprocessing in ``prepare``; a batched forward pass under
``torch.inference_mode`` in ``run_batch`` (pinned memory and non-blocking
copies on CUDA, autocast when ``precision`` is fp16/bf16); probabilities
through the output spec's activation; a finding per label at or above its
threshold. Every raw probability goes to the audit.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config.inference import LabelSpec, ModelConfig
from engine.model import Finding
from engine.store.inference import CaseContext
from inference import preprocess, series
from inference.deid import PseudonymMap, transform_for
from inference.errors import NotApplicable


@dataclass(slots=True)
class StudyInput:
    case: CaseContext
    paths: list[str]
    pseudo: PseudonymMap | None = None  # set for external models


@dataclass(slots=True)
class Prepared:
    study_uid: str  # as the model sees it: a pseudonym for external models
    array: np.ndarray | None = None  # [C, H, W] or [C, D, H, W]
    payload: Any = None  # rule-based models: what their rules read
    info: dict[str, Any] = field(default_factory=dict)  # for the audit (no patient data)


@dataclass(slots=True)
class ModelOutput:
    study_uid: str  # echoed from Prepared: re-linked to the real study for external models
    findings: list[Finding]
    outputs: dict[str, Any] = field(default_factory=dict)


class InferenceModel(abc.ABC):
    """A loaded model. ``checksum`` is the SHA-256 of what was loaded; ``device`` where its
    batches run ("cpu", "cuda:0")."""

    def __init__(self, config: ModelConfig, checksum: str, device: str) -> None:
        self.config = config
        self.name = config.name
        self.version = config.version
        self.checksum = checksum
        self.device = device

    @abc.abstractmethod
    def prepare(self, study: StudyInput) -> Prepared:
        """Read and preprocess (pool thread). Raises ``NotApplicable`` / ``PreprocessError``."""

    @abc.abstractmethod
    def run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        """One batched pass (the device's thread); one output per item, in order."""

    def budget_secs(self) -> float:
        """How long one batch may take before its items time out."""
        return self.config.timeout_secs

    def available(self) -> bool:
        """False while the model's server is known to be down (remote models); jobs then
        wait without being prepared."""
        return True

    async def recheck(self) -> bool:
        """Is a model that was not ``available`` reachable again? (remote models probe)."""
        return True

    def close(self) -> None:
        """Release what the model holds outside the process (a remote model's connection);
        local models hold nothing there."""
        return None

    def finding(self, label: LabelSpec, probability: float | None, detail: str | None = None,
                demo: bool = False) -> Finding:
        return Finding(code=label.code, display=label.display, coding_system=label.system,
                       probability=probability, critical=label.criticality == "critical",
                       model_name=self.name, model_version=self.version, demo=demo,
                       criticality=label.criticality, mode=self.config.mode, detail=detail)


class TensorModel(InferenceModel):
    demo = False

    def __init__(self, config: ModelConfig, checksum: str, device: str, module: Any,
                 labels: list[LabelSpec]) -> None:
        super().__init__(config, checksum, device)
        self.module = module
        self.labels = labels
        self.volume = len(config.input.size) == 3

    def prepare(self, study: StudyInput) -> Prepared:
        spec = self.config.input
        headers = series.read_headers(study.paths)
        if spec.modality:
            wanted = {m.upper() for m in spec.modality}
            headers = [h for h in headers if h.modality in wanted]
            if not headers:
                raise NotApplicable(f"no {'/'.join(sorted(wanted))} images in the study")
        chosen = series.select(headers, spec.series, self.volume, spec.min_slices)
        transform = transform_for(study.pseudo)
        if self.volume:
            arr, ds = preprocess.prepare_volume([h.path for h in chosen], spec, transform)
        else:
            arr, ds = preprocess.prepare_image(chosen[0].path, spec, transform)
        info = {"series": str(ds.get("SeriesInstanceUID", "")), "images": len(chosen),
                "view": chosen[0].view_position or None}
        return Prepared(str(ds.get("StudyInstanceUID", "")), arr, info=info)

    def run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        import torch

        x = torch.from_numpy(np.stack([i.array for i in items if i.array is not None]))
        device = torch.device(self.device)
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        with torch.inference_mode(), self._autocast(device):
            raw = self.module(x)
        probs = self._activate(raw.float()).cpu().numpy()
        return [self._output(item, row) for item, row in zip(items, probs, strict=True)]

    def _autocast(self, device: Any) -> Any:
        import torch

        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _activate(self, raw: Any) -> Any:
        activation = self.config.output.activation
        if activation == "sigmoid":
            return raw.sigmoid()
        if activation == "softmax":
            return raw.softmax(dim=1)
        return raw

    def _output(self, item: Prepared, row: np.ndarray) -> ModelOutput:
        findings = [self.finding(label, float(p), demo=self.demo)
                    for label, p in zip(self.labels, row, strict=True) if p >= label.threshold]
        probs = {label.code: round(float(p), 6) for label, p in zip(self.labels, row,
                                                                    strict=True)}
        return ModelOutput(item.study_uid, findings, {"probabilities": probs, **item.info})


class DemoModel(TensorModel):
    """demo-cxr: fixed seeded weights, trained on nothing. Every output says DEMO."""

    demo = True

    def finding(self, label: LabelSpec, probability: float | None, detail: str | None = None,
                demo: bool = True) -> Finding:
        f = super().finding(label, probability, detail, demo=True)
        f.display = f"DEMO (not a clinical finding): {label.display}"
        f.critical, f.criticality = False, "none"
        return f
