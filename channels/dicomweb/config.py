"""Config models of the DICOMweb sources (documentation comes from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.config.base import Strict, TLSConfig, check_hostport
from engine.config.secrets import SecretEnv, SecretFile, one_secret, secret_env, secret_file
from engine.httplimits import HTTPLimitsConfig


class StowSourceConfig(HTTPLimitsConfig):
    type: Literal["dicomweb"]
    listen: str = Field(description='Address to listen on, "host:port" (port 0 picks one).')
    path_prefix: str = Field(
        "", pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description='Served under this prefix, e.g. "/dicom-web" gives POST /dicom-web/studies.')
    max_body_bytes: int = Field(
        2 * 1024**3, ge=1024,
        description="Larger requests are answered 413 (checked against Content-Length first, "
                    "then while streaming).")
    ingest_concurrency: int = Field(
        4, ge=1, le=64,
        description="Parts of one request stored in parallel; also bounds the parts held in "
                    "memory at once.")
    tls: TLSConfig | None = Field(None, description="HTTPS, or mutual TLS with client_ca.")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))


class PollSourceConfig(Strict):
    type: Literal["dicomweb_poll"]
    url: str = Field(
        pattern=r"^https?://",
        description="orthanc: the Orthanc REST root (http://pacs:8042); qido: the DICOMweb "
                    "service root (http://pacs:8042/dicom-web).")
    flavour: Literal["orthanc", "qido"] = Field(
        "orthanc",
        description="orthanc: follow GET /changes (NewInstance) and fetch /instances/{id}/file; "
                    "qido: search studies by StudyDate over lookback_days with QIDO-RS and "
                    "fetch unseen instances with WADO-RS.")
    poll_interval_secs: float = Field(5, gt=0, description="Pause between polls when idle.")
    batch_size: int = Field(100, ge=1, le=10_000,
                            description="orthanc: changes asked for per request.")
    fetch_concurrency: int = Field(4, ge=1, le=32, description="Instances fetched in parallel.")
    start_from: Literal["now", "beginning"] = Field(
        "now", description="With no saved position: skip what the PACS already holds (now) or "
                           "ingest everything it has (beginning).")
    lookback_days: int = Field(
        1, ge=0, le=365, description="qido: studies dated today and this many days back.")
    username: str | None = Field(None, description="HTTP basic authentication user.")
    password_env: SecretEnv | None = secret_env("the HTTP basic authentication password")
    password_file: SecretFile | None = secret_file("the HTTP basic authentication password")
    request_timeout_secs: float = Field(60, gt=0, description="One HTTP request, end to end.")
    backoff_max_secs: float = Field(
        60, gt=0, description="After errors the pause doubles from poll_interval_secs up to "
                              "this.")

    @model_validator(mode="after")
    def _auth(self) -> PollSourceConfig:
        one_secret(self, "password", required=False)
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("password_env / password_file need a username")
        return self
