"""The model registry: TorchScript and state_dict files, checksums, devices, the demo model."""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from engine.config.inference import ModelConfig
from engine.store.inference import CaseContext
from inference import architectures
from inference.errors import ChecksumMismatch, ModelLoadError
from inference.models import StudyInput
from inference.registry import load_all, load_model, resolve_device
from tests.unit.test_inference_series import write_instance

LABELS = [{"code": "39607008", "display": "Lung structure finding", "system": "SCT",
           "threshold": 0.0, "criticality": "high"},
          {"code": "RID5352", "display": "pneumothorax", "system": "RADLEX", "threshold": 1.0}]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def config(**kw: Any) -> ModelConfig:
    base: dict[str, Any] = {"name": "site-cxr", "version": "2.1", "format": "torchscript",
                            "input": {"size": [32, 32]}, "output": {"labels": LABELS},
                            "device": "auto"}
    base.update(kw)
    return ModelConfig.model_validate(base)


def scripted(tmp_path: Path, trace: bool = False) -> Path:
    torch.manual_seed(0)
    net = TinyNet().eval()
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; sites still ship it
        warnings.simplefilter("ignore", DeprecationWarning)
        module = (torch.jit.trace(net, torch.zeros(1, 1, 32, 32)) if trace
                  else torch.jit.script(net))
    path = tmp_path / "model.pt"
    module.save(str(path))
    return path


def study(tmp_path: Path) -> StudyInput:
    pixels = (np.arange(64 * 64) % 4096).astype(np.uint16).reshape(64, 64)
    path = write_instance(tmp_path / "cr.dcm", pixels, BodyPartExamined="CHEST",
                          ViewPosition="PA")
    return StudyInput(CaseContext(1, "1.2.3.4", 0, "ready"), [str(path)])


@pytest.mark.parametrize("trace", [False, True], ids=["scripted", "traced"])
def test_a_torchscript_file_loads_checksummed_and_predicts(tmp_path: Path, trace: bool) -> None:
    path = scripted(tmp_path, trace)
    model = load_model(config(path=str(path)))
    assert model.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    (out,) = model.run_batch([model.prepare(study(tmp_path))])
    assert out.study_uid == "1.2.3.4"
    assert [f.code for f in out.findings] == ["39607008"]  # threshold 0 vs 1
    f = out.findings[0]
    assert (f.coding_system, f.criticality, f.critical, f.demo) == ("SCT", "high", False, False)
    assert set(out.outputs["probabilities"]) == {"39607008", "RID5352"}


def test_the_configured_checksum_must_match_the_file(tmp_path: Path) -> None:
    path = scripted(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model(config(path=str(path), sha256=digest.upper())).checksum == digest
    with pytest.raises(ChecksumMismatch, match=f"is {digest}, configured 0000"):
        load_model(config(path=str(path), sha256="0" * 64))


def test_a_failed_model_is_recorded_and_the_others_load(tmp_path: Path) -> None:
    good = config(path=str(scripted(tmp_path)))
    bad = config(name="tampered", path=str(scripted(tmp_path)), sha256="1" * 64)
    missing = config(name="missing", path=str(tmp_path / "nope.pt"))
    models, failed, loads = load_all([good, bad, missing])
    assert list(models) == ["site-cxr"]
    assert failed["tampered"].startswith("model unavailable: sha256 of model.pt is")
    assert "cannot read model file" in failed["missing"]
    assert [(m.name, m.status) for m in loads] == [("site-cxr", "loaded"),
                                                   ("tampered", "failed"), ("missing", "failed")]


def test_a_state_dict_loads_into_its_named_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(architectures.build("resnet18", 2, 1).state_dict(), path)
    model = load_model(config(format="state_dict", architecture="resnet18", path=str(path),
                              input={"size": [64, 64]}))
    (out,) = model.run_batch([model.prepare(study(tmp_path))])
    assert len(out.outputs["probabilities"]) == 2
    with pytest.raises(ModelLoadError, match="cannot load state_dict"):
        load_model(config(format="state_dict", architecture="resnet34", path=str(path)))


def test_resnet_parameter_names_follow_torchvision() -> None:
    keys = set(architectures.build("resnet18", 10, 3).state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight", "layer4.1.bn2.bias", "fc.weight"} <= keys


def test_outputs_that_disagree_with_the_labels_refuse_the_model(tmp_path: Path) -> None:
    three = [*LABELS, {"code": "x", "display": "x"}]
    with pytest.raises(ModelLoadError, match="dry run failed|do not match"):
        load_model(config(path=str(scripted(tmp_path)), output={"labels": three}))


def test_demo_cxr_has_fixed_weights_and_says_demo(tmp_path: Path) -> None:
    demo = {"name": "demo-cxr", "version": "0.1.0", "format": "builtin",
            "input": {"size": [64, 64]}}
    a, b = load_model(ModelConfig.model_validate(demo)), load_model(
        ModelConfig.model_validate(demo))
    assert a.checksum == b.checksum
    prepared = a.prepare(study(tmp_path))
    out_a, out_b = a.run_batch([prepared])[0], b.run_batch([prepared])[0]
    assert out_a.outputs["probabilities"] == out_b.outputs["probabilities"]
    assert out_a.findings, "the demo thresholds let some outputs through"
    for f in out_a.findings:
        assert f.demo and f.display.startswith("DEMO (not a clinical finding)")
        assert f.coding_system == "99RADBRIDGE" and not f.critical


def test_mixed_precision_runs_where_the_device_supports_it(tmp_path: Path) -> None:
    model = load_model(config(path=str(scripted(tmp_path)), precision="bf16"))
    (out,) = model.run_batch([model.prepare(study(tmp_path))])
    assert all(0 <= p <= 1 for p in out.outputs["probabilities"].values())


def test_an_absent_cuda_device_is_a_load_error() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == "cuda:0"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ModelLoadError, match="cuda:0 is not available"):
            resolve_device("cuda:0")


def test_nothing_imports_torchvision() -> None:
    load_model(ModelConfig.model_validate({"name": "demo-cxr", "version": "1",
                                           "format": "builtin"}))
    assert "torchvision" not in sys.modules


class TinyNet3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3, 4)))


def test_a_3d_model_reads_the_thinnest_axial_series_as_a_volume(tmp_path: Path) -> None:
    from tests.unit.test_inference_series import ct_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyNet3D()).save(str(tmp_path / "ct3d.pt"))
    model = load_model(config(path=str(tmp_path / "ct3d.pt"), input={
        "size": [8, 16, 16], "window": "fixed", "window_center": 40, "window_width": 400,
        "min_slices": 8}))
    thin, thick = ct_series(tmp_path, 12, 1.0), ct_series(tmp_path, 10, 5.0)
    case = CaseContext(1, "1.2.3.4", 0, "ready", modality="CT")
    prepared = model.prepare(StudyInput(case, [str(p) for p in thick + thin]))
    assert prepared.array is not None and prepared.array.shape == (1, 8, 16, 16)
    assert prepared.info["images"] == 12  # the 1 mm series, not the 5 mm one
    (out,) = model.run_batch([prepared, prepared])[:1]
    assert len(out.outputs["probabilities"]) == 2


def test_images_of_another_modality_than_the_input_spec_are_not_read(tmp_path: Path) -> None:
    from inference.errors import NotApplicable

    model = load_model(config(path=str(scripted(tmp_path)), input={"size": [32, 32],
                                                                   "modality": ["DX"]}))
    with pytest.raises(NotApplicable, match="no DX images"):
        model.prepare(study(tmp_path))  # a CR image
