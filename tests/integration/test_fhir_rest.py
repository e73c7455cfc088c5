"""The fhir_rest destination against a real FHIR test server on loopback.

Covers: a transaction lands once however often it is sent (conditional create),
bearer and OAuth2 client-credentials auth (token cached, refreshed once on 401),
429/503 are transient with Retry-After honoured, a 400 OperationOutcome is a
rejection that keeps the server's text, a closed port is transient, and the
DeliveryWorker waits what Retry-After says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from channels.fhir_rest import FhirRestConfig, FhirRestDestination
from engine.errors import PeerRejected, PeerUnavailable, RetryLater, TransientDeliveryError
from engine.flow.delivery import DeliveryWorker
from engine.model import DeliveryStatus
from engine.registry import get
from radbridge_fhir.bundle import build_bundle
from tests.fixtures.fhir_server import FhirTestServer, fhir_server, outcome
from tests.fixtures.reports import sample_report


def _config(**values: Any) -> FhirRestConfig:
    return TypeAdapter(FhirRestConfig).validate_python({"type": "fhir_rest", **values})


def _payload(tmp_path: Path, **kw: Any) -> bytes:
    return json.dumps(build_bundle(sample_report(tmp_path, **kw)), sort_keys=True).encode()


async def _send(config: FhirRestConfig, payload: bytes) -> bytes:
    dest = FhirRestDestination("ehr-fhir", config)
    try:
        return await dest.send(payload)
    finally:
        await dest.close()


def test_the_destination_registers_as_a_fhir_sink() -> None:
    spec = get("destination", "fhir_rest")
    assert spec.sink == "fhir" and spec.factory is FhirRestDestination


def test_secrets_are_named_never_written_in_the_config() -> None:
    with pytest.raises(ValidationError, match="exactly one of token_env and token_file"):
        _config(base_url="https://fhir.example.org/r4", auth={"type": "bearer"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        _config(base_url="https://fhir.example.org/r4",
                auth={"type": "bearer", "token_env": "T", "token": "plain"})
    with pytest.raises(ValidationError, match="http"):
        _config(base_url="ftp://fhir.example.org")


async def test_two_posts_of_one_report_leave_one_copy_of_each_resource(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    async with fhir_server() as server:
        first = json.loads(await _send(_config(base_url=server.url), payload))
        held = server.count()
        second = json.loads(await _send(_config(base_url=server.url), payload))
        assert server.transactions == 2 and server.count() == held == 8
        assert {e["response"]["status"] for e in first["entry"]} == {"201 Created"}
        assert {e["response"]["status"] for e in second["entry"]} == {"200 OK"}
        (post,) = {r.headers["Content-Type"] for r in server.requests if r.method == "POST"}
        assert post.startswith("application/fhir+json")
        (dr,) = server.of_type("DiagnosticReport")
        (patient,) = server.of_type("Patient")
        assert dr["subject"]["reference"] == f"Patient/{patient['id']}"
        assert all(r["reference"].startswith("Observation/") for r in dr["result"])


async def test_a_second_report_of_the_same_patient_reuses_patient_study_and_device(
        tmp_path: Path) -> None:
    async with fhir_server() as server:
        first = sample_report(tmp_path)
        rerun = dataclasses.replace(first, revision=2)  # the same study, read again
        for report in (first, rerun):
            await _send(_config(base_url=server.url), json.dumps(build_bundle(report)).encode())
        assert len(server.of_type("Patient")) == 1 and len(server.of_type("Device")) == 2
        assert len(server.of_type("ImagingStudy")) == 1
        assert len(server.of_type("DiagnosticReport")) == 2


async def test_a_bearer_token_comes_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    async with fhir_server(auth="bearer", token="tok-123") as server:
        cfg = _config(base_url=server.url,
                      auth={"type": "bearer", "token_file": str(token_file)})
        await _send(cfg, _payload(tmp_path))
        assert server.requests[-1].headers["Authorization"] == "Bearer tok-123"
        token_file.write_text("wrong")
        with pytest.raises(PeerRejected) as err:
            await _send(cfg, _payload(tmp_path))
        assert err.value.code == "HTTP 401" and "no or bad token" in err.value.reason


async def test_a_bearer_token_from_an_unset_variable_is_a_rejection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RB_TEST_FHIR_TOKEN", raising=False)
    async with fhir_server(auth="bearer", token="x") as server:
        cfg = _config(base_url=server.url,
                      auth={"type": "bearer", "token_env": "RB_TEST_FHIR_TOKEN"})
        with pytest.raises(PeerRejected, match="RB_TEST_FHIR_TOKEN is not set"):
            await _send(cfg, _payload(tmp_path))
        assert server.requests == []
        monkeypatch.setenv("RB_TEST_FHIR_TOKEN", "x")
        await _send(cfg, _payload(tmp_path))
        assert server.transactions == 1


@pytest.mark.parametrize("client_auth", ["basic", "post"])
async def test_oauth2_client_credentials_token_is_cached_and_refreshed_once_on_401(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_auth: str) -> None:
    monkeypatch.setenv("RB_TEST_FHIR_SECRET", "s3cret:&=")
    payload = _payload(tmp_path)
    async with fhir_server(auth="oauth2", client_secret="s3cret:&=") as server:
        cfg = _config(base_url=server.url, auth={
            "type": "oauth2", "token_url": f"{server.url}/token", "client_id": "radbridge",
            "client_secret_env": "RB_TEST_FHIR_SECRET", "scope": "system/*.write",
            "client_auth": client_auth})
        dest = FhirRestDestination("ehr-fhir", cfg)
        try:
            await dest.send(payload)
            await dest.send(payload)
            assert dest.credentials.fetched == 1 and server.transactions == 2
            assert server.token_requests[0]["scope"] == "system/*.write"
            server.revoke_tokens()  # the server forgets the token: 401, new token, resend
            await dest.send(payload)
            assert dest.credentials.fetched == 2 and server.transactions == 3
        finally:
            await dest.close()


async def test_oauth2_with_a_wrong_secret_is_a_rejection(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("RB_TEST_FHIR_SECRET", "wrong")
    async with fhir_server(auth="oauth2") as server:
        cfg = _config(base_url=server.url, auth={
            "type": "oauth2", "token_url": f"{server.url}/token", "client_id": "radbridge",
            "client_secret_env": "RB_TEST_FHIR_SECRET"})
        with pytest.raises(PeerRejected, match="invalid_client"):
            await _send(cfg, _payload(tmp_path))
        assert server.transactions == 0


async def test_429_with_retry_after_and_503_are_transient(tmp_path: Path) -> None:
    async with fhir_server() as server:
        cfg = _config(base_url=server.url)
        server.script(429, outcome("slow down", "throttled"), {"Retry-After": "7"})
        with pytest.raises(RetryLater) as err:
            await _send(cfg, _payload(tmp_path))
        assert isinstance(err.value, TransientDeliveryError) and err.value.retry_after == 7.0
        server.script(503, "")
        with pytest.raises(RetryLater) as err:
            await _send(cfg, _payload(tmp_path))
        assert err.value.retry_after is None and "HTTP 503" in str(err.value)
        assert server.count() == 0
        await _send(cfg, _payload(tmp_path))
        assert server.count() == 8


async def test_a_400_operation_outcome_is_a_rejection_with_its_text(tmp_path: Path) -> None:
    async with fhir_server() as server:
        server.script(400, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid",
             "diagnostics": "Observation.code: unknown code system",
             "expression": ["Bundle.entry[4].resource.code"]}]})
        with pytest.raises(PeerRejected) as err:
            await _send(_config(base_url=server.url), _payload(tmp_path))
        assert err.value.code == "HTTP 400"
        assert "Observation.code: unknown code system" in err.value.reason
        assert "Bundle.entry[4].resource.code" in err.value.reason
        assert err.value.response is not None and b"OperationOutcome" in err.value.response


async def test_a_closed_port_is_transient(tmp_path: Path) -> None:
    server = FhirTestServer()
    await server.start()
    url = server.url
    await server.close()
    with pytest.raises(PeerUnavailable):
        await _send(_config(base_url=url, timeout_secs=2), _payload(tmp_path))


class _Store:
    """Just what DeliveryWorker._send_one touches."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    async def record_attempt(self, delivery: Any, error: str) -> None:
        self.attempts.append(error)

    async def delivery_status(self, delivery_id: int) -> DeliveryStatus:
        return DeliveryStatus.QUEUED


async def test_the_delivery_worker_waits_what_retry_after_says(tmp_path: Path) -> None:
    from engine.store.base import Delivery

    async with fhir_server() as server:
        dest = FhirRestDestination("ehr-fhir", _config(base_url=server.url,
                                                       retry_initial_secs=0.01))
        server.script(429, outcome("busy", "throttled"), {"Retry-After": "1"})
        store = _Store()
        worker = DeliveryWorker("ehr-fhir", dest, store)  # type: ignore[arg-type]
        delivery = Delivery(1, 1, "ehr-fhir", DeliveryStatus.QUEUED, 0, _payload(tmp_path))
        started = asyncio.get_running_loop().time()
        try:
            result = await worker._send_one(delivery)
        finally:
            await dest.close()
        waited = asyncio.get_running_loop().time() - started
        assert result is not None and result.status == DeliveryStatus.SENT
        assert worker.retries == 1
        assert waited >= 1.0 and len(store.attempts) == 1
