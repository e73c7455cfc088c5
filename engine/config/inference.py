"""channels.toml ``[[model]]`` and ``[[route]]``: the inference part of the configuration.

Pure pydantic (no torch), so ``radbridge lint`` checks model entries on a
machine without the inference extra. ``engine.config.topology`` checks that routes
name known models; the registry (``inference.registry``) checks files and
checksums when the engine starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.config.base import ReadableFile, Strict
from engine.config.secrets import SecretEnv, SecretFile, one_secret, secret_env, secret_file

BUILTIN_MODELS = ("demo-cxr", "dicom-qa")
ARCHITECTURES = ("demo_cnn", "resnet18", "resnet34")
MATCH_KEYS = ("modality", "body_part", "procedure_code", "patient_class", "location", "priority")


class InputSpec(Strict):
    """What a pixel model takes: which images, how they are windowed, resized and normalised."""

    modality: list[str] = Field(default_factory=list,
                                description="Accepted modalities (empty: any).")
    size: list[int] = Field([224, 224], min_length=2, max_length=3,
                            description="[H, W] for 2-D models, [D, H, W] for 3-D (volumes).")
    channels: int = Field(1, ge=1, le=4, description="Grey values repeated to this many.")
    window: Literal["dicom", "fixed", "minmax"] = Field(
        "dicom", description="dicom: the image's VOI LUT or window (min-max if none); "
                             "fixed: window_center/window_width below; minmax: full range.")
    window_center: float | None = None
    window_width: float | None = Field(None, gt=0)
    normalize: Literal["unit", "zscore", "mean_std"] = Field(
        "unit", description="unit: [0, 1]; zscore: per image; mean_std: (x - mean) / std.")
    mean: list[float] = Field(default_factory=lambda: [0.5])
    std: list[float] = Field(default_factory=lambda: [0.25])
    series: Literal["auto", "frontal", "thinnest_axial", "first"] = Field(
        "auto", description="auto: frontal view for CR/DX, thinnest axial series for CT/MR.")
    min_slices: int = Field(8, ge=1, description="3-D: fewest slices an axial series needs.")

    @model_validator(mode="after")
    def _fixed_window_needs_values(self) -> InputSpec:
        if self.window == "fixed" and (self.window_center is None or self.window_width is None):
            raise ValueError('window = "fixed" needs window_center and window_width')
        return self


class LabelSpec(Strict):
    """One model output: its code, when it counts as positive, and how urgent it is."""

    code: str = Field(min_length=1)
    display: str = Field(min_length=1)
    system: Literal["SCT", "RADLEX", "LN", "99RADBRIDGE"] = Field(
        "SCT", description="Coding scheme (DICOM designators): SNOMED CT, RadLex, LOINC, local.")
    threshold: float = Field(0.5, ge=0, le=1, description="Positive at or above this.")
    criticality: Literal["none", "low", "high", "critical"] = "none"


class OutputSpec(Strict):
    activation: Literal["sigmoid", "softmax", "none"] = Field(
        "sigmoid", description="Applied to the model's raw outputs to get probabilities.")
    labels: list[LabelSpec] = Field(default_factory=list)


class DoseReference(Strict):
    body_part: str
    ctdivol_mgy: float = Field(gt=0)
    dlp_mgycm: float = Field(gt=0)


def _default_dose() -> list[DoseReference]:
    # Illustrative adult values of the order of published national DRLs; set your site's own.
    return [DoseReference.model_validate({"body_part": part, "ctdivol_mgy": ctdi,
                                          "dlp_mgycm": dlp})
            for part, ctdi, dlp in (("HEAD", 60, 1000), ("CHEST", 15, 600),
                                    ("ABDOMEN", 20, 1000))]


class QAOptions(Strict):
    """Settings of the built-in ``dicom-qa`` rules (ignored by other models)."""

    dose_reference: list[DoseReference] = Field(default_factory=_default_dose)
    slice_thickness_max_mm: dict[str, float] = Field(
        default_factory=lambda: {"HEAD": 5.0, "CHEST": 5.0, "ABDOMEN": 5.0},
        description="Protocol: the thinnest axial CT series of a body part must be this thin.")
    procedure_body_part: dict[str, list[str]] = Field(
        default_factory=dict, description="Procedure code -> body parts it may show.")
    paired_body_parts: list[str] = Field(
        default_factory=lambda: ["HAND", "WRIST", "ARM", "ELBOW", "SHOULDER", "CLAVICLE",
                                 "HIP", "KNEE", "LEG", "ANKLE", "FOOT", "BREAST", "EXTREMITY"])


class RemoteSpec(Strict):
    """``format = "kserve"``: where the model is served (KServe v2 / Triton HTTP protocol).

    The engine still selects the series and preprocesses the pixels (``input``), sends the
    prepared tensor batch, and turns the returned scores into findings (``output``). The
    server sees pixels only: no DICOM header, no identifiers.
    """

    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                     description="Base URL of the inference server, e.g. http://triton:8000 "
                                 "(a path prefix is kept: https://gw/kserve).")
    model: str | None = Field(None, min_length=1,
                              description="The model's name on the server (default: name).")
    model_version: str | None = Field(
        None, min_length=1, description="Pin a server-side version (default: the server's "
                                        "policy). Pinning is what makes the audit exact.")
    input: str | None = Field(None, min_length=1,
                              description="Input tensor name (default: the model's only one).")
    output: str | None = Field(None, min_length=1,
                               description="Output tensor name (default: its only one).")
    binary: bool = Field(True, description="Send and receive tensors as raw bytes (the binary "
                                           "tensor extension of Triton); false: JSON lists, for "
                                           "servers without the extension.")
    token_env: SecretEnv | None = secret_env("a bearer token for the server")
    token_file: SecretFile | None = secret_file("the bearer token")
    ca_file: ReadableFile | None = Field(
        None, description="https: CA bundle to trust (default: system).")

    @model_validator(mode="after")
    def _one_token(self) -> RemoteSpec:
        one_secret(self, "token", required=False)
        return self


class ModelConfig(Strict):
    """One ``[[model]]`` entry."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(min_length=1)
    format: Literal["torchscript", "state_dict", "builtin", "kserve"] = "torchscript"
    builtin: Literal["demo-cxr", "dicom-qa"] | None = Field(
        None, validate_default=True,
        description="format = builtin: which one (default: the model's name).")
    path: str | None = Field(None, validate_default=True,
                             description="TorchScript or state_dict file.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                               description="Refuse the file unless its SHA-256 is this.")
    architecture: Literal["demo_cnn", "resnet18", "resnet34"] | None = Field(
        None, validate_default=True,
        description="format = state_dict: the named pure-torch architecture.")
    input: InputSpec = Field(default_factory=lambda: InputSpec.model_validate({}))
    output: OutputSpec = Field(default_factory=lambda: OutputSpec.model_validate({}),
                               validate_default=True)
    remote: RemoteSpec | None = Field(None, validate_default=True,
                                      description="format = kserve: the serving endpoint.")
    qa: QAOptions = Field(default_factory=lambda: QAOptions.model_validate({}))
    batch_max: int = Field(8, ge=1, le=1024)
    max_wait_ms: float = Field(20, ge=0, description="Flush a partial batch after this long.")
    timeout_secs: float = Field(60, gt=0, description="One forward pass, per attempt.")
    retries: int = Field(2, ge=0, le=10, description="Attempts after the first one fails.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto: cuda:0 when present, else cpu (kserve: the "
                                    "server decides; this is not used).")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="fp16/bf16: autocast (mixed precision) in the forward pass.")
    mode: Literal["second_reader", "shadow"] = Field(
        "second_reader", description="shadow: findings are kept and audited, never sent.")
    external: bool = Field(False, description="De-identify (PS3.15 basic profile subset) "
                                              "before the model sees the study.")

    @property
    def builtin_name(self) -> str:
        return self.builtin or self.name

    # Field validators (not one model validator) so that lint names the key at fault.
    @field_validator("builtin")
    @classmethod
    def _builtin(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = value or info.data.get("name")
        if info.data.get("format") == "builtin" and name not in BUILTIN_MODELS:
            raise ValueError(f"format = builtin needs builtin = one of {list(BUILTIN_MODELS)}")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        fmt = info.data.get("format")
        if fmt in ("torchscript", "state_dict") and not value:
            raise ValueError(f"format = {fmt} needs path")
        return value

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("format") == "state_dict" and value is None:
            raise ValueError(f"format = state_dict needs architecture = one of "
                             f"{list(ARCHITECTURES)}")
        return value

    @field_validator("remote")
    @classmethod
    def _remote(cls, value: RemoteSpec | None, info: ValidationInfo) -> RemoteSpec | None:
        fmt = info.data.get("format")
        if fmt == "kserve" and value is None:
            raise ValueError('format = kserve needs remote = { url = "http://host:8000" }')
        if value is not None and fmt != "kserve":
            raise ValueError(f"remote is only for format = kserve, not {fmt}")
        return value

    @field_validator("output")
    @classmethod
    def _labels(cls, value: OutputSpec, info: ValidationInfo) -> OutputSpec:
        fmt = info.data.get("format")
        if fmt in ("torchscript", "state_dict", "kserve") and not value.labels:
            raise ValueError(f"format = {fmt} needs output.labels (one per model output)")
        return value


class WhenConfig(Strict):
    """Match values: a string or a list of strings (any of them), compared case-insensitively.
    ``location`` and ``procedure_code`` also match by prefix when the value ends in ``*``."""

    modality: str | list[str] | None = None
    body_part: str | list[str] | None = None
    procedure_code: str | list[str] | None = None
    patient_class: str | list[str] | None = None
    location: str | list[str] | None = None
    priority: str | list[str] | None = None


class RouteConfig(Strict):
    """One ``[[route]]``: every model of every matching route runs on the case."""

    name: str | None = None
    when: WhenConfig = Field(default_factory=lambda: WhenConfig.model_validate({}))
    models: list[str] = Field(min_length=1)
