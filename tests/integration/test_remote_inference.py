"""Remote inference (``format = "kserve"``) against a real Triton Inference Server.

The server (PyTriton, CPU) computes ``reference_scores`` of what it receives; the
tests compute the same on the tensor the engine prepared, so every probability
checks the whole path: preprocessing, the byte layout of binary and JSON tensors,
batch order, the activation, and findings by threshold.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import socketserver
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.config.inference import ModelConfig
from engine.store.inference import CaseContext, JobState
from inference.errors import ForwardError, ModelLoadError
from inference.models import StudyInput
from inference.registry import load_all, load_model
from inference.remote import RemoteModel, RemoteRejected, RemoteUnavailable, activate
from inference.service import InferenceService
from tests.conftest import wait_for
from tests.fixtures.triton import TritonServer
from tests.fixtures.triton_server import reference_scores
from tests.integration.test_correlation import orm, send_hl7
from tests.integration.test_inference import cli, real_chest_cr, start, write_config
from tests.unit.test_inference_series import write_instance

LABELS = [{"code": f"R{i}", "display": f"remote output {i}", "system": "99RADBRIDGE",
           "threshold": 0.5} for i in range(4)]


def remote_config(url: str, model: str = "cxr-remote", **kw: Any) -> ModelConfig:
    remote = {"url": url, "model": model, **kw.pop("remote", {})}
    base: dict[str, Any] = {"name": "site-remote", "version": "7.0", "format": "kserve",
                            "remote": remote, "input": {"size": [64, 64], "window": "minmax"},
                            "output": {"labels": LABELS}}
    base.update(kw)
    return ModelConfig.model_validate(base)


def studies(tmp_path: Path, n: int) -> list[StudyInput]:
    """*n* radiographs with different pixels (a gradient, scaled and shifted per study)."""
    out = []
    for i in range(n):
        ramp = np.add.outer(np.arange(64) * (i + 1), np.arange(64) * (3 - i) % 64)
        path = write_instance(tmp_path / f"s{i}.dcm", (ramp % 4096).astype(np.uint16),
                              StudyInstanceUID=f"1.2.3.{i}", BodyPartExamined="CHEST",
                              ViewPosition="PA")
        out.append(StudyInput(CaseContext(i + 1, f"1.2.3.{i}", 0, "ready"), [str(path)]))
    return out


@pytest.mark.parametrize(("model", "binary"), [("cxr-remote", True), ("cxr-remote", False),
                                               ("cxr-single", True)],
                         ids=["batched-binary", "batched-json", "unbatched"])
def test_a_batch_goes_to_the_server_and_each_item_gets_its_own_scores(
        triton: TritonServer, tmp_path: Path, model: str, binary: bool) -> None:
    remote = load_model(remote_config(triton.url, model, remote={"binary": binary}))
    assert isinstance(remote, RemoteModel) and remote.io is not None
    prepared = [remote.prepare(s) for s in studies(tmp_path, 3)]
    outputs = remote.run_batch(prepared)
    remote.close()

    sent = np.stack([p.array for p in prepared if p.array is not None])
    expected = activate(reference_scores(sent).astype(np.float64), "sigmoid")
    assert [o.study_uid for o in outputs] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    for out, row in zip(outputs, expected, strict=True):
        got = [out.outputs["probabilities"][f"R{i}"] for i in range(4)]
        assert got == pytest.approx(row, abs=1e-5)
        assert [f.code for f in out.findings] == [f"R{i}" for i in range(4) if row[i] >= 0.5]
        assert all((f.model_name, f.model_version, f.demo) == ("site-remote", "7.0", False)
                   for f in out.findings)
    assert len({tuple(np.round(r, 4)) for r in expected}) == 3  # the items really differ


def test_the_checksum_is_the_servers_metadata_and_the_device_names_the_server(
        triton: TritonServer) -> None:
    models, failed, loads = load_all([remote_config(triton.url)])
    models["site-remote"].close()
    assert not failed
    (load,) = loads
    with urllib.request.urlopen(f"{triton.url}/v2/models/cxr-remote") as r:
        metadata = json.loads(r.read())
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
    assert load.status == "loaded" and load.format == "kserve"
    assert load.checksum == models["site-remote"].checksum == \
        hashlib.sha256(canonical).hexdigest()
    assert load.device == f"kserve://127.0.0.1:{triton.url.rsplit(':', 1)[1]}"


@pytest.mark.parametrize(("change", "reason"), [
    ({"model": "no-such-model"}, "does not serve this model"),
    ({"input": {"size": [64, 64], "channels": 3}}, "configured input is [3, 64, 64]"),
    ({"output": {"labels": LABELS[:3]}}, "4 values; 3 labels are configured"),
    ({"remote": {"input": "pixels"}}, "no input tensor 'pixels'"),
    ({"remote": {"model_version": "9"}}, "does not serve this model"),
], ids=["unknown-model", "channels", "labels", "tensor-name", "version"])
def test_a_model_the_server_cannot_run_is_refused_at_load_with_the_reason(
        triton: TritonServer, change: dict[str, Any], reason: str) -> None:
    model = change.pop("model", "cxr-remote")
    _, failed, loads = load_all([remote_config(triton.url, model, **change)])
    assert reason in failed["site-remote"]
    assert loads[0].status == "failed" and reason in (loads[0].error or "")


def test_a_model_failing_on_the_server_is_a_transient_error_with_its_message(
        triton: TritonServer, tmp_path: Path) -> None:
    # The broken model fails even its dry run, so it is built and verified by hand here.
    config = remote_config(triton.url, "broken")
    remote = RemoteModel(config, list(config.output.labels))
    remote.verify()
    with pytest.raises(RemoteRejected) as caught:
        remote.run_batch([remote.prepare(studies(tmp_path, 1)[0])])
    remote.close()
    assert isinstance(caught.value, ForwardError)  # retried with backoff by the job runner
    assert caught.value.status == 500 and "always fails" in str(caught.value)
    with pytest.raises(ModelLoadError, match="dry run failed"):
        load_model(config)


class Forwarder(socketserver.ThreadingTCPServer):
    """A TCP relay to the real server that comes up late: its port is bound at once (nobody
    else can take it) and refuses connections until ``come_up`` starts listening."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        super().__init__(("127.0.0.1", 0), _Relay, bind_and_activate=False)
        self.server_bind()
        self.port = int(self.server_address[1])
        self.serving = False

    def come_up(self) -> None:
        self.serving = True
        self.server_activate()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.serving:
            self.shutdown()
        self.server_close()


class _Relay(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        upstream = socket.create_connection(self.server.target)  # type: ignore[attr-defined]

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                b.close()

        threading.Thread(target=pump, args=(upstream, self.request), daemon=True).start()
        pump(self.request, upstream)


def test_a_server_down_at_start_defers_the_model_and_verifies_it_before_its_first_batch(
        triton: TritonServer, tmp_path: Path) -> None:
    relay = Forwarder(("127.0.0.1", int(triton.url.rsplit(":", 1)[1])))
    models, failed, loads = load_all([remote_config(f"http://127.0.0.1:{relay.port}")])
    remote = models["site-remote"]
    assert not failed and loads[0].status == "deferred" and loads[0].checksum == ""
    assert isinstance(remote, RemoteModel)
    item = remote.prepare(studies(tmp_path, 1)[0])
    with pytest.raises(RemoteUnavailable):  # transient: the job runner retries it
        remote.run_batch([item])

    relay.come_up()
    try:
        (out,) = remote.run_batch([item])
    finally:
        remote.close()
        relay.stop()
    assert remote.checksum and remote.io is not None  # verified on the way
    assert item.array is not None
    expected = activate(reference_scores(item.array[None]).astype(np.float64), "sigmoid")[0]
    assert [out.outputs["probabilities"][f"R{i}"] for i in range(4)] == \
        pytest.approx(expected, abs=1e-5)


def engine_config(tmp_path: Path, db_url: str, url: str) -> str:
    """The ris channel of test_inference, routing chest radiographs to the remote model."""
    text = write_config(tmp_path, db_url, inference=False) + f"""
[[route]]
name = "chest-radiographs"
when = {{ modality = ["CR", "DX"], body_part = "CHEST" }}
models = ["site-remote"]
[[model]]
name = "site-remote"
version = "7.0"
format = "kserve"
remote = {{ url = "{url}", model = "cxr-remote", model_version = "1" }}
input = {{ size = [224, 224] }}
output = {{ labels = [
    {{ code = "R0", display = "remote output 0", system = "99RADBRIDGE" }},
    {{ code = "R1", display = "remote output 1", system = "99RADBRIDGE" }},
    {{ code = "R2", display = "remote output 2", system = "99RADBRIDGE" }},
    {{ code = "R3", display = "remote output 3", system = "99RADBRIDGE" }},
] }}
"""
    (tmp_path / "channels.toml").write_text(text)
    return text


async def test_the_engine_runs_a_correlated_study_through_the_remote_model_and_audits_it(
        triton: TritonServer, engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine, ingest, results = await start(
        engine_factory, engine_config(tmp_path, db_url, triton.url), tmp_path)
    await send_hl7(engine, orm("OR1", "ACC-REMOTE1"))
    part10, uid = real_chest_cr("ACC-REMOTE1")
    await ingest.ingest(part10)
    await wait_for(lambda: results, timeout=60)
    (result,) = results
    assert result.case.study_uid == uid
    assert [(j.model, j.state) for j in result.jobs] == [("site-remote", JobState.DONE)]
    (audit,) = await engine.store.list_audit(model="site-remote")
    assert (audit.status, audit.version, audit.study_uid) == ("ok", "7.0", uid)
    assert audit.device.startswith("kserve://127.0.0.1:") and len(audit.checksum) == 64
    probabilities = json.loads(audit.outputs)["probabilities"]
    assert set(probabilities) == {"R0", "R1", "R2", "R3"}
    assert {f.code for f in result.findings} == {c for c, p in probabilities.items() if p >= 0.5}
    assert "kserve" in await cli(tmp_path, "models")


async def test_jobs_wait_for_a_server_that_is_down_without_using_up_their_retries(
        triton: TritonServer, engine_factory: Any, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(InferenceService, "reverify_secs", 0.2)
    monkeypatch.setattr(InferenceService, "retry_backoff_secs", 0.05)  # down: 0.25 s apart
    relay = Forwarder(("127.0.0.1", int(triton.url.rsplit(":", 1)[1])))
    try:
        engine, ingest, results = await start(
            engine_factory, engine_config(tmp_path, db_url, f"http://127.0.0.1:{relay.port}"),
            tmp_path)

        async def load_status() -> str:
            loads = await engine.store.list_model_loads()
            return loads[0].status if loads else ""

        async def is_loaded() -> bool:  # recorded again once the server answered
            return await load_status() == "loaded"

        await wait_for(load_status, timeout=30)
        assert await load_status() == "deferred"
        await send_hl7(engine, orm("OR2", "ACC-REMOTE2"))
        part10, _ = real_chest_cr("ACC-REMOTE2")
        await ingest.ingest(part10)

        def tries() -> int:
            return sum("INF-303" in r.getMessage() for r in caplog.records)
        await wait_for(lambda: tries() >= 4, timeout=30)  # more tries than its retries (2)
        assert not results  # still waiting, not failed

        async def queued_unused() -> bool:  # between two tries: queued, no attempt used up
            jobs = await engine.store.list_jobs()
            return [(j.state, j.attempts) for j in jobs] == [(JobState.QUEUED, 0)]
        await wait_for(queued_unused, timeout=10, interval=0.01)

        relay.come_up()
        await wait_for(lambda: results, timeout=30)
        await wait_for(is_loaded, timeout=30)
    finally:
        relay.stop()
    (result,) = results
    assert [(j.model, j.state) for j in result.jobs] == [("site-remote", JobState.DONE)]
    audit = await engine.store.list_audit(model="site-remote")
    assert sorted(a.status for a in audit) == ["ok", "unavailable"]  # one row for the outage
    (waited,) = [a for a in audit if a.status == "unavailable"]
    assert (waited.error or "").startswith(f"server unavailable: 127.0.0.1:{relay.port}")
    (loaded,) = [m for m in await engine.store.list_model_loads() if m.status == "loaded"]
    assert len(loaded.checksum) == 64


def test_a_batch_larger_than_the_servers_max_batch_size_goes_in_pieces(
        triton: TritonServer, tmp_path: Path) -> None:
    remote = load_model(remote_config(triton.url, batch_max=16))
    assert isinstance(remote, RemoteModel)
    assert remote.server_batch == 8 and remote.requests_per_batch() == 2  # Triton's config
    prepared = [remote.prepare(s) for s in studies(tmp_path, 3)] * 4  # 12 items
    outputs = remote.run_batch(prepared)
    remote.close()
    sent = np.stack([p.array for p in prepared if p.array is not None])
    expected = activate(reference_scores(sent).astype(np.float64), "sigmoid")
    assert len(outputs) == 12
    for out, row in zip(outputs, expected, strict=True):
        assert [out.outputs["probabilities"][f"R{i}"] for i in range(4)] == \
            pytest.approx(row, abs=1e-5)


class Gateway(http.server.ThreadingHTTPServer):
    """What a KServe ingress answers while the predictor scales up from zero: 503 to
    everything (the gateway is not ours and does not run here)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Unavailable)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b'{"error": "no healthy upstream"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def test_a_gateway_answering_503_defers_the_model_rather_than_refusing_it() -> None:
    gateway = Gateway()
    try:
        models, failed, loads = load_all([remote_config(
            f"http://127.0.0.1:{gateway.server_address[1]}")])
    finally:
        gateway.shutdown()
        gateway.server_close()
    models["site-remote"].close()
    assert not failed and loads[0].status == "deferred"
