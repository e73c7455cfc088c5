"""AI inference: model registry, routing, preprocessing, de-identification, batching.

Importing this package does not import torch: pixel models import it when they
load, so ``dicom-qa`` and routing work without the inference extra.

The service glue (jobs, recovery, result listeners) is ``inference.service``; the
``radbridge worker`` process is ``inference.worker``.
"""

from inference.deid import PseudonymMap, deidentify
from inference.dispatch import Batcher, DeviceWorker, ItemResult
from inference.errors import (
    ChecksumMismatch,
    DeidentificationRefused,
    ForwardError,
    InferenceError,
    InferenceTimeout,
    ModelLoadError,
    NotApplicable,
    PreprocessError,
    TransientInferenceError,
)
from inference.models import InferenceModel, ModelOutput, Prepared, StudyInput, TensorModel
from inference.registry import load_all, load_model, sha256_file
from inference.routing import Plan, Router, lane_for

__all__ = [
    "Batcher", "ChecksumMismatch", "DeidentificationRefused", "DeviceWorker", "ForwardError",
    "InferenceError", "InferenceModel", "InferenceTimeout", "ItemResult", "ModelLoadError",
    "ModelOutput", "NotApplicable", "Plan", "Prepared", "PreprocessError", "PseudonymMap",
    "Router", "StudyInput", "TensorModel", "TransientInferenceError", "deidentify", "lane_for",
    "load_all", "load_model", "sha256_file",
]
