"""Remote models: ``format = "kserve"``, served over the KServe v2 / Triton HTTP protocol.

The engine keeps everything that is ours: series selection and preprocessing
(``prepare``, a pool thread, exactly as for a local model), dynamic batching,
retries, the audit, de-identification, and turning scores into findings. What
travels is the prepared FP32 tensor batch, ``[N, C, H, W]`` (or ``[N, C, D, H,
W]``), and nothing else: no DICOM header, no UID, no patient data (the request
id is a counter).

The protocol (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/):

* ``GET  v2/models/{m}[/versions/{v}]``        metadata: tensor names, types, shapes
* ``GET  v2/models/{m}[/versions/{v}]/ready``  readiness
* ``POST v2/models/{m}[/versions/{v}]/infer``  one batch

With ``binary = true`` tensors travel as raw little-endian bytes after the JSON
header (Triton's binary tensor data extension, ``Inference-Header-Content-Length``);
with ``binary = false`` as JSON lists, which every v2 server accepts.

The HTTP client is the standard library's ``http.client``: ``run_batch`` runs on
the model's own device thread (one thread per server, so the event loop never
waits on the network) and keeps one persistent connection. tritonclient's HTTP
client would add gevent and rapidjson for the same few requests.

A server that does not answer when the engine starts is not a broken model: the
model loads *deferred* and is verified (metadata, readiness, shapes) before its
first batch; until then its jobs retry with backoff like any transient failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import itertools
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from engine.config.inference import LabelSpec, ModelConfig, RemoteSpec
from engine.config.secrets import SecretUnavailable, read_secret
from engine.logs import event
from inference.errors import (
    UNAVAILABLE,
    ForwardError,
    InferenceTimeout,
    ModelLoadError,
    ServerUnavailable,
)
from inference.models import ModelOutput, Prepared, TensorModel

log = logging.getLogger("radbridge.inference")

HEADER_LENGTH = "Inference-Header-Content-Length"
BUSY = frozenset({429, 503})  # the server says it cannot take it now
GATEWAY = frozenset({502, 504})  # a gateway in front of it got no good answer
CONNECT_SECS = 5.0  # a server that does not accept a connection this soon is unavailable
PROBE_SECS = 2.0  # a down server is asked whether it is ready at most this often
# numpy dtype of each v2 datatype we accept on the way in or out.
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


class RemoteUnavailable(ServerUnavailable):
    """The server cannot be reached (refused, connect timeout, reset) or says it cannot take
    the request now (429/503; 502/504 from a gateway). ``busy``: it answered 429 or 503, so
    it is up and saying "later"; otherwise it may be down, or this very request broke it."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(UNAVAILABLE + message)
        self.busy = busy


class RemoteRejected(ForwardError):
    """The server answered with an error status; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True, slots=True)
class RemoteMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    digest: str  # SHA-256 of the metadata document, canonicalised

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> RemoteMetadata:
        def tensors(key: str) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(str(t["name"]), str(t["datatype"]),
                                    tuple(int(d) for d in t["shape"])) for t in doc.get(key, []))

        try:
            canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            return cls(str(doc["name"]), tuple(str(v) for v in doc.get("versions", [])),
                       str(doc.get("platform", "")), tensors("inputs"), tensors("outputs"),
                       hashlib.sha256(canonical).hexdigest())
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"the server's model metadata is not v2 metadata ({exc!r})") \
                from exc


def pick(tensors: tuple[TensorSpec, ...], wanted: str | None, what: str) -> TensorSpec:
    """The configured tensor, or the only one there is."""
    if wanted is not None:
        for t in tensors:
            if t.name == wanted:
                return t
        raise ModelLoadError(f"the server's model has no {what} tensor {wanted!r} "
                             f"(it has {[t.name for t in tensors]})")
    if len(tensors) != 1:
        raise ModelLoadError(f"the server's model has {len(tensors)} {what} tensors "
                             f"{[t.name for t in tensors]}: set remote.{what}")
    return tensors[0]


def _dims_match(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(
        d in (-1, a) for d, a in zip(declared, actual, strict=True))


class KServeClient:
    """Blocking KServe v2 HTTP client for one model on one server; one thread uses it."""

    def __init__(self, spec: RemoteSpec, model_name: str, timeout: float) -> None:
        parts = urlsplit(spec.url)
        self.spec = spec
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.netloc = f"{self.host}:{self.port}"
        model = quote(spec.model or model_name, safe="")
        version = f"/versions/{quote(spec.model_version, safe='')}" if spec.model_version else ""
        self.base = f"{parts.path.rstrip('/')}/v2/models/{model}{version}"
        self.timeout = timeout
        self.connect_timeout = min(CONNECT_SECS, timeout)
        self.closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._ids = itertools.count(1)
        self._headers: dict[str, str] = {}
        if spec.token_env or spec.token_file:
            try:
                token = read_secret(spec.token_env, spec.token_file, "remote token")
            except SecretUnavailable as exc:
                raise ModelLoadError(str(exc)) from exc
            self._headers["Authorization"] = f"Bearer {token}"

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The kept connection, connected; and whether it was already open (reused).

        Connecting has its own short timeout: a host that does not accept a connection is
        unavailable (the job waits), while a server that accepted the request and then does
        not answer within ``timeout`` is a timeout (the attempt counts)."""
        if self.closed:
            raise RemoteUnavailable(f"{self.netloc}: the engine is stopping")
        if self._conn is not None and self._conn.sock is not None:
            return self._conn, True
        if self.https:
            context = ssl.create_default_context(cafile=self.spec.ca_file)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port,
                                              timeout=self.connect_timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:  # refused, unreachable, timed out
            conn.close()
            raise RemoteUnavailable(f"{self.netloc}: cannot connect ({type(exc).__name__})") \
                from exc
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout)
        # Headers and tensor bytes go in separate writes: without this, Nagle holds the
        # second back until the first is acknowledged.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        return conn, False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on the kept connection. When a kept-alive connection turns out to have
        been closed by the server while idle, the request is sent once more on a new one
        (the server may, rarely, have seen the first: inference is stateless, so at worst
        the batch is computed twice)."""
        all_headers = {**self._headers, **(headers or {})}
        while True:
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if not reused:
                    raise RemoteUnavailable(f"{self.netloc} closed the connection") from exc
            except TimeoutError as exc:
                self.close()
                raise InferenceTimeout(f"{self.netloc} did not answer within "
                                       f"{self.timeout:g}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise RemoteUnavailable(f"{self.netloc}: {type(exc).__name__}: "
                                        f"{str(exc)[:200]}") from exc

    def get_json(self, suffix: str) -> dict[str, Any]:
        status, _, data = self.request("GET", self.base + suffix)
        if status in BUSY or status in GATEWAY:
            raise RemoteUnavailable(f"{self.netloc} answered {status}: {_error_text(data)}",
                                    busy=status in BUSY)
        if status != 200:
            raise RemoteRejected(status, _error_text(data))
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ModelLoadError(f"{self.netloc} answered a GET with something other than "
                                 f"JSON") from exc
        return doc if isinstance(doc, dict) else {}

    def ready(self) -> bool:
        status, _, _ = self.request("GET", self.base + "/ready")
        return status == 200

    def max_batch_size(self) -> int | None:
        """Triton's ``max_batch_size`` for the model (its ``/config`` extension), or None
        where the server does not say (plain KServe v2 has no such endpoint)."""
        try:
            doc = self.get_json("/config")
        except (RemoteRejected, ModelLoadError):
            return None
        value = doc.get("max_batch_size")
        return int(value) if isinstance(value, int) and value > 0 else None

    def infer(self, x: np.ndarray, inp: TensorSpec, out: TensorSpec) -> np.ndarray:
        """One batch in, the output tensor back as float32."""
        x = np.ascontiguousarray(x, dtype=np.dtype(DATATYPES[inp.datatype]).newbyteorder("<"))
        tensor: dict[str, Any] = {"name": inp.name, "shape": list(x.shape),
                                  "datatype": inp.datatype}
        request: dict[str, Any] = {"id": str(next(self._ids)), "inputs": [tensor],
                                   "outputs": [{"name": out.name}]}
        headers = {"Content-Type": "application/json"}
        if self.spec.binary:
            raw = x.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            request["outputs"][0]["parameters"] = {"binary_data": True}
            head = json.dumps(request, separators=(",", ":")).encode()
            body = head + raw
            headers = {"Content-Type": "application/octet-stream",
                       HEADER_LENGTH: str(len(head))}
        else:
            tensor["data"] = x.reshape(-1).tolist()
            body = json.dumps(request, separators=(",", ":")).encode()
        status, response_headers, data = self.request("POST", self.base + "/infer", body,
                                                      headers)
        if status in BUSY or status in GATEWAY:
            raise RemoteUnavailable(f"{self.netloc} answered {status}: {_error_text(data)}",
                                    busy=status in BUSY)
        if status != 200:
            raise RemoteRejected(status, _error_text(data))
        return decode_output(data, response_headers.get(HEADER_LENGTH.lower()), out.name)


def _error_text(data: bytes) -> str:
    """The v2 error message ({"error": "..."}), cut short: its first line, and when the server
    appended a traceback (Triton's Python backend does) the exception line that ends it."""
    try:
        doc = json.loads(data)
        text = str(doc.get("error", "")) if isinstance(doc, dict) else ""
    except ValueError:
        text = data[:2000].decode("utf-8", "replace")
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    raised = [line for line in lines[1:] if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return lines[0][:200] + (f" ... {raised[-1][:200]}" if raised else "")


def decode_output(data: bytes, header_length: str | None, name: str) -> np.ndarray:
    """The named output of an infer response, JSON or binary, as float32 in its shape."""
    try:
        head_len = int(header_length) if header_length is not None else len(data)
        doc = json.loads(data[:head_len])
        offset = head_len
        for tensor in doc["outputs"]:
            shape = tuple(int(d) for d in tensor["shape"])
            dtype = np.dtype(DATATYPES[tensor["datatype"]]).newbyteorder("<")
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                chunk = data[offset:offset + int(size)]
                offset += int(size)
                if tensor["name"] == name:
                    return np.frombuffer(chunk, dtype).reshape(shape).astype(np.float32)
            elif tensor["name"] == name:
                return np.asarray(tensor["data"], dtype).reshape(shape).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: bad JSON, reshape
        raise ForwardError(f"malformed infer response ({type(exc).__name__})") from exc
    raise ForwardError(f"the infer response has no output {name!r}")


def activate(raw: np.ndarray, activation: str) -> np.ndarray:
    """The output spec's activation in numpy (the remote model returns raw scores)."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-raw))
    if activation == "softmax":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return raw


class RemoteModel(TensorModel):
    """A model on a KServe v2 server. ``device`` is ``kserve://host:port``: the dispatcher
    gives every server its own thread."""

    def __init__(self, config: ModelConfig, labels: list[LabelSpec]) -> None:
        assert config.remote is not None
        self.client = KServeClient(config.remote, config.name, config.timeout_secs)
        super().__init__(config, "", f"kserve://{self.client.netloc}", None, labels)
        self.meta: RemoteMetadata | None = None
        self.io: tuple[TensorSpec, TensorSpec, bool] | None = None  # input, output, batched
        self.server_batch: int | None = None  # Triton's max_batch_size, when it says
        self.down = False  # the last batch found the server unavailable: probe before more
        self._verify_lock = threading.Lock()
        # Probes run beside the device thread, so they have their own connection.
        self._probe = KServeClient(config.remote, config.name, CONNECT_SECS)
        self._probe_lock = threading.Lock()
        self._probed_at = -PROBE_SECS

    def close(self) -> None:
        """Stopping: no new connection is opened; what is open is closed."""
        for client in (self.client, self._probe):
            client.closed = True
            client.close()

    def probe(self, fresh: bool = False) -> bool:
        """Is the model ready now? (a pool thread; one short GET, its own connection). A
        server found ready again clears ``down``. Every job waiting for the server asks; one
        GET per ``PROBE_SECS`` answers them all."""
        with self._probe_lock:
            if not fresh and time.monotonic() - self._probed_at < PROBE_SECS:
                return not self.down
            try:
                ready = self._probe.ready()
            except (ServerUnavailable, InferenceTimeout):
                ready = False
            finally:
                self._probe.close()
            self._probed_at = time.monotonic()
            self.down = not ready
        return ready

    def available(self) -> bool:
        return not self.down

    async def recheck(self) -> bool:
        return await asyncio.to_thread(self.probe)

    def requests_per_batch(self) -> int:
        """How many infer requests one batch of ``batch_max`` items may take."""
        if self.io is not None and not self.io[2]:
            return self.config.batch_max
        limit = self.server_batch or self.config.batch_max
        return -(-self.config.batch_max // limit)

    def budget_secs(self) -> float:
        """How long a batch may take: connecting, then each of its requests in turn (and the
        three requests of a verification when the model has not been verified yet)."""
        verify = 0 if self.io is not None else 3
        return CONNECT_SECS + self.config.timeout_secs * (self.requests_per_batch() + verify)

    def verify(self) -> None:
        """Metadata, readiness, and tensor shapes against the configuration; sets the
        checksum to the SHA-256 of the server's metadata. Raises ``ModelLoadError`` for a
        model that cannot work, ``RemoteUnavailable`` for a server that does not answer."""
        with self._verify_lock:
            if self.io is not None:
                return
            try:
                meta = RemoteMetadata.parse(self.client.get_json(""))
            except RemoteRejected as exc:
                raise ModelLoadError(f"the server does not serve this model ({exc})") from exc
            remote = self.config.remote
            assert remote is not None
            if remote.model_version and meta.versions and \
                    remote.model_version not in meta.versions:
                raise ModelLoadError(f"the server has versions {list(meta.versions)}, "
                                     f"not {remote.model_version}")
            inp = pick(meta.inputs, remote.input, "input")
            out = pick(meta.outputs, remote.output, "output")
            for t, what in ((inp, "input"), (out, "output")):
                if t.datatype not in DATATYPES:
                    raise ModelLoadError(f"{what} {t.name} is {t.datatype}; radbridge sends "
                                         f"and reads {sorted(DATATYPES)}")
            item = (self.config.input.channels, *self.config.input.size)
            if _dims_match(inp.shape, (-1, *item)) and inp.shape[0] == -1:
                batched = True
            elif _dims_match(inp.shape, item):
                batched = False
            else:
                raise ModelLoadError(f"input {inp.name} has shape {list(inp.shape)}; the "
                                     f"configured input is {list(item)} (plus a batch "
                                     f"dimension when the server batches)")
            if out.shape and out.shape[-1] not in (-1, len(self.labels)):
                raise ModelLoadError(f"output {out.name} has {out.shape[-1]} values; "
                                     f"{len(self.labels)} labels are configured")
            if not self.client.ready():
                raise RemoteUnavailable(f"{self.client.netloc}: model not ready")
            self.server_batch = self.client.max_batch_size() if batched else None
            self.meta, self.checksum = meta, meta.digest
            self.io = (inp, out, batched)
        event(log, "INF-105", "remote model verified", model=self.name, version=self.version,
              server=self.client.netloc, platform=meta.platform, sha256=meta.digest[:16])

    def run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        if self.io is None:
            try:
                self.verify()
            except ModelLoadError as exc:  # a server that changed under us: retried, audited
                raise ForwardError(str(exc)) from exc
        assert self.io is not None
        inp, out, batched = self.io
        arrays = [i.array for i in items if i.array is not None]
        if len(arrays) != len(items):
            raise ForwardError("an item has no pixels")
        try:
            if batched:  # in pieces of the server's max_batch_size when it has one
                step = self.server_batch or len(arrays)
                scores = np.concatenate([
                    self.client.infer(np.stack(arrays[i:i + step]), inp, out).reshape(
                        len(arrays[i:i + step]), -1) for i in range(0, len(arrays), step)])
            else:  # the server does not batch: one request per item
                scores = np.stack([self.client.infer(a, inp, out).reshape(-1) for a in arrays])
        except RemoteUnavailable as exc:
            # A reset or a gateway error while the model answers ready: this batch broke
            # something (or timed out behind a gateway). It counts as a failed attempt, so
            # a batch that always does it cannot wait for ever.
            if not exc.busy and self.probe(fresh=True):
                raise ForwardError(f"{exc} (the model is ready: the request failed)") from exc
            self.down = True
            raise
        self.down = False
        scores = scores.reshape(len(items), -1)
        if scores.shape[1] != len(self.labels):
            raise ForwardError(f"the server returned {scores.shape[1]} values per item, "
                               f"{len(self.labels)} labels are configured")
        probs = activate(scores.astype(np.float64), self.config.output.activation)
        return [self._output(item, row) for item, row in zip(items, probs, strict=True)]


def load_remote(config: ModelConfig, dry_run: Callable[[RemoteModel], None]
                ) -> tuple[RemoteModel, str]:
    """A remote model, verified and given one *dry_run* batch now when the server answers;
    returns the model and its load status: ``loaded``, or ``deferred`` (the server is down,
    busy or silent; verified before the first batch). A server that answers but cannot run
    this model is a ``ModelLoadError``."""
    labels = list(config.output.labels)
    if not labels:
        raise ModelLoadError("output.labels is empty")
    model = RemoteModel(config, labels)
    try:
        model.verify()
        dry_run(model)  # zeros through the real server: shapes and labels agree
    except ModelLoadError:
        model.close()
        raise
    except (ServerUnavailable, InferenceTimeout) as exc:
        event(log, "INF-302", "remote model not reachable; verified before its first batch",
              model=config.name, server=model.client.netloc, reason=type(exc).__name__,
              level=logging.WARNING)
        return model, "deferred"
    return model, "loaded"
