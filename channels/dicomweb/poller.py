"""Polling source for a PACS that pushes nothing: the loop, its backoff and its HTTP client.

``PollSource`` runs one task on the event loop (aiohttp, so nothing blocks
it). Each round asks the flavour (``channels.dicomweb.feeds``) for what is
new, fetches those instances as Part 10 bytes and hands them to
``InstanceIngest``; only then is the position saved (``cursor``), so a crash
re-fetches at most one round and never skips one. Errors are decided by type:

* ``PeerUnavailable`` (refused, timeout, 5xx) or ``StoreUnavailable``: the
  round is abandoned, the pause doubles up to ``backoff_max_secs``, and the
  same position is tried again.
* ``InstanceGone`` (404) or ``InvalidInstance``: that instance is skipped and
  counted; the round goes on.

The position lives in a small JSON file under the data directory
(``pollers/<channel>.json``), written atomically and fsynced. It names the
flavour and URL it belongs to: pointing a channel at another PACS starts afresh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from channels.dicom.part10 import read_meta
from channels.dicomweb.config import PollSourceConfig
from channels.dicomweb.feeds import FEEDS, Feed, InstanceGone
from engine.config.secrets import SecretUnavailable, read_secret
from engine.errors import PeerUnavailable, StoreUnavailable
from engine.flow.durable import write_durably
from engine.flow.instances import InstanceIngest, InvalidInstance
from engine.logs import event
from engine.registry import register

log = logging.getLogger("radbridge.dicomweb.poll")


class Cursor:
    """``seq`` (Orthanc change number) and ``studies`` (QIDO: seen instances per study)."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path = path
        self.owner = owner
        self.seq: int | None = None
        self.studies: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        """Read the saved position; a missing, foreign or unreadable file means none."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(doc, dict) or doc.get("owner") != self.owner:
            return
        seq = doc.get("seq")
        self.seq = seq if isinstance(seq, int) else None
        studies = doc.get("studies")
        self.studies = studies if isinstance(studies, dict) else {}

    def save(self) -> None:
        doc = {"owner": self.owner, "seq": self.seq, "studies": self.studies}
        write_durably(self.path, json.dumps(doc, separators=(",", ":")).encode())


class Http:
    """A small aiohttp wrapper that turns transport trouble into ``PeerUnavailable``."""

    def __init__(self, base: str, config: PollSourceConfig) -> None:
        self.base = base.rstrip("/")
        self.config = config
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.request_timeout_secs))

    def _headers(self, accept: str) -> dict[str, str]:
        """Accept, and basic credentials with the password read at each request (rotation
        is picked up); a password that cannot be read now is ``PeerUnavailable``: polling
        backs off and says why."""
        headers = {"Accept": accept}
        cfg = self.config
        if not cfg.username:
            return headers
        password = ""
        if cfg.password_env or cfg.password_file:
            try:
                password = read_secret(cfg.password_env, cfg.password_file, "PACS password")
            except SecretUnavailable as exc:
                raise PeerUnavailable(str(exc)) from exc
        pair = base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"  # aiohttp.BasicAuth is deprecated
        return headers

    async def get(self, path: str, params: dict[str, str] | None = None,
                  accept: str = "application/json") -> tuple[bytes, Any]:
        """(body, headers) of a GET; 404 raises ``InstanceGone``, other errors PeerUnavailable."""
        url = f"{self.base}{path}"
        try:
            async with self.session.get(url, params=params,
                                        headers=self._headers(accept)) as r:
                body = await r.read()
                if r.status == 404:
                    raise InstanceGone(path)
                if r.status >= 300:
                    raise PeerUnavailable(f"GET {path}: HTTP {r.status}")
                return body, r.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"GET {path}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self.session.close()


@register("source", "dicomweb_poll", PollSourceConfig,
          "polls a PACS (Orthanc change feed, or QIDO-RS/WADO-RS) for new instances",
          sink="dicom")
class PollSource:
    """A poller for one channel. It listens on nothing: ``address`` is the PACS it polls."""

    def __init__(self, name: str, config: PollSourceConfig, sink: InstanceIngest) -> None:
        self.name, self.config, self.sink = name, config, sink
        self.cursor = Cursor(Path(sink.root).parent / "pollers" / f"{name}.json",
                             f"{config.flavour} {config.url}")
        self.http: Http | None = None
        self.feed: Feed | None = None
        self.task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.fetched = self.skipped = self.errors = 0
        self.rounds = 0

    @property
    def address(self) -> tuple[str, int] | None:
        """A poller listens on nothing."""
        return None

    async def start(self) -> None:
        self.sink.bind(asyncio.get_running_loop())
        await asyncio.to_thread(self.cursor.load)
        self.http = Http(self.config.url, self.config)
        self.feed = FEEDS[self.config.flavour](self.http, self.config, self.cursor)
        self.task = asyncio.create_task(self._run(), name=f"poll:{self.name}")

    async def stop(self) -> None:
        """Let the round in progress finish and save (up to request_timeout_secs), then stop."""
        task, self.task = self.task, None
        if task is not None:
            self._stopping.set()
            await asyncio.wait({task}, timeout=self.config.request_timeout_secs)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.http is not None:
            await self.http.close()
            self.http = None
        event(log, "WEB-359", "poller stopped", channel=self.name, fetched=self.fetched,
              skipped=self.skipped, errors=self.errors)

    async def _run(self) -> None:
        pause = self.config.poll_interval_secs
        while not self._stopping.is_set():
            try:
                more = await self.poll_once()
                pause = self.config.poll_interval_secs
                if more:
                    continue
            except (PeerUnavailable, StoreUnavailable) as exc:
                self.errors += 1
                pause = min(pause * 2, self.config.backoff_max_secs)
                event(log, "WEB-352", "poll failed, backing off", channel=self.name,
                      reason=str(exc), retry_secs=pause, level=logging.WARNING)
            except Exception:
                self.errors += 1
                pause = self.config.backoff_max_secs
                log.exception("WEB-398 unexpected poller error channel=%s", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    async def poll_once(self) -> bool:
        """One round: fetch and ingest what is new, then save the position. True: more waits."""
        assert self.feed is not None
        batch = await self.feed.changes()
        gate = asyncio.Semaphore(self.config.fetch_concurrency)
        results = await asyncio.gather(*(self._fetch(ref, gate) for ref in batch.refs),
                                       return_exceptions=True)
        for res in results:  # every fetch has ended: nothing runs on behind our back
            if isinstance(res, BaseException):
                raise res
        batch.commit()
        await asyncio.to_thread(self.cursor.save)
        self.rounds += 1
        if batch.refs:
            event(log, "WEB-351", "poll round", channel=self.name, instances=len(batch.refs),
                  more=batch.more or None)
        return batch.more

    async def _fetch(self, ref: Any, gate: asyncio.Semaphore) -> None:
        assert self.feed is not None
        async with gate:
            try:
                data = await self.feed.fetch(ref)
                meta = await asyncio.to_thread(read_meta, data, self.sink.own_manufacturer)
                result = await self.sink.ingest(data, meta, self.feed.expected_count(ref))
            except (InstanceGone, InvalidInstance) as exc:
                self.skipped += 1
                event(log, "WEB-353", "instance skipped", channel=self.name,
                      reason=getattr(exc, "reason", f"gone: {exc}"), level=logging.WARNING)
                self.feed.done(ref, None)
                return
        self.fetched += 1
        self.feed.done(ref, result.meta.sop_uid)
