"""STOW-RS receiver: ``POST /studies`` and ``POST /studies/{study}`` (PS3.18 10.5).

The multipart/related body is streamed part by part; each part is one Part 10
instance, inspected and written (file fsynced) in a thread as it arrives (at most
``ingest_concurrency`` parts in flight, so memory stays bounded). When the body is read,
``InstanceIngest.commit`` makes the request's files durable together: each folder fsynced
once, every row indexed in one transaction. The answer is sent only after every stored
part is durable and indexed; a part that fails fails alone, with its FailureReason.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import parse_mimetype

from channels.dicom.part10 import read_meta
from channels.dicom.status import STUDY_MISMATCH, Failure, classify
from channels.dicomweb.config import StowSourceConfig
from channels.dicomweb.multipart import BodyTooLarge, MalformedMultipart, RelatedReader
from channels.dicomweb.response import Outcome, stow_response
from engine.config.base import parse_hostport
from engine.flow.instances import IngestResult, InstanceIngest, InvalidInstance, Staged
from engine.httplimits import BodyTimeout, LimitedListener, read_within, runner_options
from engine.logs import event
from engine.registry import register
from engine.store.clinical import InstanceMeta

log = logging.getLogger("radbridge.dicomweb")


@register("source", "dicomweb", StowSourceConfig,
          "DICOMweb STOW-RS receiver: POST multipart/related application/dicom", sink="dicom")
class StowSource:
    """An aiohttp server for one channel. ``start`` raises ``OSError`` if it cannot bind."""

    def __init__(self, name: str, config: StowSourceConfig, sink: InstanceIngest) -> None:
        self.name, self.config, self.sink = name, config, sink
        self.runner: web.AppRunner | None = None
        self.listener: LimitedListener | None = None
        self.stored = 0
        self.failed = 0

    @property
    def address(self) -> tuple[str, int] | None:
        return self.listener.address if self.listener is not None else None

    async def start(self) -> None:
        self.sink.bind(asyncio.get_running_loop())
        app = web.Application(client_max_size=self.config.max_body_bytes)
        prefix = self.config.path_prefix
        app.router.add_post(f"{prefix}/studies", self.handle)
        app.router.add_post(f"{prefix}/studies/{{study}}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    **runner_options(self.config))
        await self.runner.setup()
        host, port = parse_hostport(self.config.listen)
        ssl_context = self.config.tls.server_context() if self.config.tls else None
        self.listener = LimitedListener(self.runner, self.config, self.name)
        try:
            await self.listener.start(host, port, ssl_context)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening; requests in progress finish (aiohttp's shutdown timeout)."""
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.stop()
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
            event(log, "WEB-309", "STOW-RS stopped", channel=self.name, stored=self.stored,
                  failed=self.failed)

    async def handle(self, request: web.Request) -> web.Response:
        """Store every part of a STOW-RS request, then answer.

        HTTP statuses answered:

        * 200 every instance stored (ReferencedSOPSequence lists them).
        * 202 some stored, some failed (FailedSOPSequence gives each FailureReason).
        * 409 every instance failed.
        * 400 the multipart body is malformed (boundary not printable ASCII, no closing
          boundary, ...) or holds no part, or the body ended early (the client left).
        * 408 the body arrived too slowly (``body_timeout_secs``); parts already read are kept.
        * 413 the body is larger than ``max_body_bytes``.
        * 415 not ``multipart/related; type="application/dicom"``.
        * 503 the store is unavailable (FailureReason 0xA700/0xA701; retry later).
        """
        mime = parse_mimetype(request.headers.get("Content-Type", ""))
        part_type = mime.parameters.get("type", "application/dicom").strip('"').lower()
        if (mime.type, mime.subtype) != ("multipart", "related") \
                or part_type != "application/dicom":
            return self._refuse(web.HTTPUnsupportedMediaType, request,
                                'expected Content-Type: multipart/related; '
                                'type="application/dicom"')
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(web.HTTPRequestEntityTooLarge, request,
                                f"request body exceeds the {limit}-byte limit")
        try:
            reader = RelatedReader(request.content, mime.parameters.get("boundary", ""), limit)
            outcomes = await read_within(self._receive(reader, request.match_info.get("study")),
                                         request.content, self.config)
        except BodyTimeout as exc:
            return self._refuse(web.HTTPRequestTimeout, request, str(exc))
        except BodyTooLarge:
            return self._refuse(web.HTTPRequestEntityTooLarge, request,
                                f"request body exceeds the {limit}-byte limit")
        except MalformedMultipart as exc:
            return self._refuse(web.HTTPBadRequest, request,
                                f"malformed multipart/related body: {exc}")
        except (HttpProcessingError, ConnectionResetError) as exc:
            # bad body framing, or the client left mid-body: nobody may hear this answer, but
            # it is an answer, not a traceback (parts already stored stay stored)
            return self._refuse(web.HTTPBadRequest, request,
                                f"request body incomplete or malformed ({type(exc).__name__})")
        return self._answer(outcomes)

    def _refuse(self, kind: type[web.HTTPException], request: web.Request,
                text: str) -> web.Response:
        event(log, "WEB-303", "request refused", channel=self.name, status=kind.status_code,
              peer=request.remote, reason=text, level=logging.WARNING)
        # The body may be partly unread: close rather than drain it.
        return web.Response(status=kind.status_code, text=text, headers={"Connection": "close"})

    async def _receive(self, reader: RelatedReader, study: str | None) -> list[Outcome]:
        """Read parts one by one, writing up to ``ingest_concurrency`` at a time, then make
        the written ones durable and indexed together (``InstanceIngest.commit``)."""
        gate = asyncio.Semaphore(self.config.ingest_concurrency)
        tasks: list[asyncio.Task[Outcome | Staged]] = []
        try:
            async for headers, data in reader.parts():
                await gate.acquire()
                ctype = headers.get("content-type", "application/dicom")
                tasks.append(asyncio.create_task(self._write(data, ctype, study, gate)))
        finally:  # parts already written are committed even when a later part is malformed
            written = await asyncio.gather(*tasks, return_exceptions=True)
            outcomes = await self._commit(written)
        if not outcomes:
            raise MalformedMultipart("no instance in the request")
        return outcomes

    async def _write(self, data: bytes, content_type: str, study: str | None,
                     gate: asyncio.Semaphore) -> Outcome | Staged:
        """One part checked, written, fsynced and renamed into place (not yet durable:
        ``_commit``): ``Staged``, or the ``Outcome`` that refuses it. The part's bytes are
        released (and *gate* with them) once written, before its fsync."""
        try:
            ctype = parse_mimetype(content_type)
            if (ctype.type, ctype.subtype) != ("application", "dicom"):
                raise InvalidInstance(f"part is {ctype.type}/{ctype.subtype}, "
                                      "not application/dicom")
            written = await asyncio.to_thread(self._inspect_and_write, data, study)
        except Exception as exc:
            return self._refused(exc, None)
        finally:
            del data
            gate.release()
        if isinstance(written, Staged):
            try:
                await self.sink.place(written)
            except Exception as exc:
                return self._refused(exc, written.meta)
        return written

    def _inspect_and_write(self, data: bytes, study: str | None) -> Outcome | Staged:
        """In a thread: read the instance (UID grammar, framing, pixel rules) and write it."""
        meta = None
        try:
            meta = read_meta(data, self.sink.own_manufacturer)
            if study is not None and meta.study_uid != study:
                return Outcome(Failure(STUDY_MISMATCH, "Study Instance UID does not match the "
                                       "URL", False), meta)
            return self.sink.write(meta, data)  # path checked to stay in the instance store
        except Exception as exc:
            return self._refused(exc, meta)

    def _refused(self, exc: BaseException, meta: InstanceMeta | None) -> Outcome:
        meta = getattr(exc, "meta", meta)  # a damaged instance still names itself
        failure = classify(exc, dimse=False)
        if not isinstance(exc, InvalidInstance) and not failure.transient:
            log.error("WEB-399 unexpected error storing a part channel=%s", self.name,
                      exc_info=exc)
        return Outcome(failure, meta)

    async def _commit(self, written: list[Outcome | Staged | BaseException]) -> list[Outcome]:
        """The request's outcomes in part order, once every written part is durable and
        indexed (or failed on its own)."""
        staged = [w for w in written if isinstance(w, Staged)]
        committed = iter(await self.sink.commit(staged))
        outcomes = []
        for w in written:
            if isinstance(w, Staged):
                result = next(committed)
                w = Outcome(None, w.meta) if isinstance(result, IngestResult) \
                    else self._refused(result, w.meta)
            elif isinstance(w, BaseException):
                w = self._refused(w, None)
            if w.failure is None:
                self.stored += 1
            else:
                self._failed(w)
            outcomes.append(w)
        return outcomes

    def _failed(self, outcome: Outcome) -> Outcome:
        self.failed += 1
        failure = outcome.failure
        assert failure is not None
        event(log, "WEB-302", "instance refused", channel=self.name,
              status=f"0x{failure.code:04X}", reason=failure.comment, level=logging.WARNING)
        return outcome

    def _answer(self, outcomes: list[Outcome]) -> web.Response:
        status, body, headers = stow_response(outcomes)
        event(log, "WEB-301", "STOW-RS request answered", channel=self.name, status=status,
              instances=len(outcomes), failed=sum(o.failure is not None for o in outcomes),
              level=logging.DEBUG if status == 200 else logging.INFO)
        return web.Response(status=status, body=body, headers=headers,
                            content_type="application/dicom+json")

