"""Config model of the FHIR REST destination (the docs and ``radbridge list`` come from here).

Secrets (a bearer token, an OAuth2 client secret) come from an environment
variable or a file named here, never from channels.toml itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from engine.config.base import ReadableFile, Strict
from engine.config.secrets import SecretEnv, SecretFile, one_secret, secret_env, secret_file


class NoAuth(Strict):
    type: Literal["none"]


class BearerAuth(Strict):
    """A fixed bearer token (a long-lived API key issued by the FHIR server)."""

    type: Literal["bearer"]
    token_env: SecretEnv | None = secret_env("the token")
    token_file: SecretFile | None = secret_file("the token")

    @model_validator(mode="after")
    def _one(self) -> BearerAuth:
        one_secret(self, "token")
        return self


class OAuth2Auth(Strict):
    """OAuth2 client credentials: a token is fetched, cached until it expires, and fetched
    again once when the server answers 401."""

    type: Literal["oauth2"]
    token_url: str = Field(description="The authorization server's token endpoint.")
    client_id: str
    client_secret_env: SecretEnv | None = secret_env("the client secret")
    client_secret_file: SecretFile | None = secret_file("the client secret")
    scope: str | None = Field(None, description='e.g. "system/DiagnosticReport.write '
                                                'system/Observation.write"')
    client_auth: Literal["basic", "post"] = Field(
        "basic", description="client_secret_basic (HTTP Basic) or client_secret_post (form).")

    _check_url = field_validator("token_url")(classmethod(lambda cls, v: _http_url(v)))

    @model_validator(mode="after")
    def _one(self) -> OAuth2Auth:
        one_secret(self, "client_secret")
        return self


Auth = Annotated[NoAuth | BearerAuth | OAuth2Auth, Field(discriminator="type")]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class FhirRestConfig(Strict):
    type: Literal["fhir_rest"]
    base_url: str = Field(description="The FHIR server's base URL; transaction Bundles are "
                                      "POSTed to it.")
    auth: Auth = Field(NoAuth(type="none"), description='{ type = "none" | "bearer" | '
                                                         '"oauth2", ... }')
    timeout_secs: float = Field(30, gt=0, description="No answer in time: retry (in order).")
    ca_file: ReadableFile | None = Field(
        None, description="Verify the server (and the token endpoint) against this CA bundle "
                          "(PEM).")
    tls_verify: bool = Field(True, description="false skips certificate checks: tests only.")
    retry_initial_secs: float = Field(0.5, gt=0)
    retry_max_secs: float = Field(60, gt=0, description="Backoff ceiling; a Retry-After "
                                                        "longer than this is cut to it.")

    _check_url = field_validator("base_url")(classmethod(lambda cls, v: _http_url(v)))
