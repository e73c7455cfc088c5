"""What a poller asks a PACS: the Orthanc change feed, or QIDO-RS plus WADO-RS.

A feed says what is new (``changes``), fetches one instance as the PACS
stored it (``fetch``: Part 10 bytes, never decoded and re-encoded), and
records progress in the cursor (``done`` per instance, ``Batch.commit`` once
the whole round is durable).

* ``orthanc``: ``GET /changes?since=N&limit=M``; each NewInstance is fetched
  from ``/instances/{id}/file``; the cursor keeps the last change number.
* ``qido``: ``GET /studies?StudyDate=from-to`` with NumberOfStudyRelatedInstances;
  a study whose count changed is listed with ``/studies/{uid}/instances`` and
  unseen instances are retrieved with WADO-RS (``transfer-syntax=*``). The
  cursor keeps the seen SOP Instance UIDs of the studies still in the window.
  The study's count is handed to ingest as its expected count, so the study
  completes when that many instances have arrived (a count read while the
  PACS was still receiving completes it early; later instances reopen it as
  a new revision, as any late instance does).
  Studies without a StudyDate are not found by this flavour.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp.multipart import parse_mimetype

from channels.dicomweb.config import PollSourceConfig
from engine.errors import PeerUnavailable

if TYPE_CHECKING:
    from channels.dicomweb.poller import Cursor

WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class InstanceGone(Exception):
    """The PACS answered 404: the instance was deleted since it was listed."""


@dataclass
class Batch:
    refs: list[Any]
    more: bool = False
    commit: Callable[[], None] = field(default=lambda: None)


class Feed(Protocol):
    async def changes(self) -> Batch:
        """What is new since the cursor (nothing is recorded until ``Batch.commit``)."""

    async def fetch(self, ref: Any) -> bytes:
        """One instance as the PACS stored it (Part 10 bytes)."""

    def done(self, ref: Any, sop_uid: str | None) -> None:
        """*ref* was ingested (or skipped: *sop_uid* None)."""

    def expected_count(self, ref: Any) -> int | None:
        """How many instances the PACS says *ref*'s study has, if it says (study assembly
        completes the study once that many arrived, without waiting for the quiet period)."""


class OrthancFeed:
    """Orthanc's change log: exact, ordered, cheap to follow."""

    def __init__(self, http: Any, config: PollSourceConfig, cursor: Cursor) -> None:
        self.http, self.config, self.cursor = http, config, cursor

    async def _json(self, path: str, params: dict[str, str] | None = None) -> Any:
        body, _ = await self.http.get(path, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise PeerUnavailable(f"GET {path}: not JSON") from exc

    async def changes(self) -> Batch:
        if self.cursor.seq is None:
            start = (0 if self.config.start_from == "beginning"
                     else int((await self._json("/changes?last"))["Last"]))
            self.cursor.seq = start
        page = await self._json("/changes", {"since": str(self.cursor.seq),
                                             "limit": str(self.config.batch_size)})
        refs = [c["ID"] for c in page.get("Changes", []) if c.get("ChangeType") == "NewInstance"]
        last = int(page.get("Last", self.cursor.seq))

        def commit() -> None:
            self.cursor.seq = max(self.cursor.seq or 0, last)

        return Batch(refs, not page.get("Done", True), commit)

    async def fetch(self, ref: Any) -> bytes:
        body, _ = await self.http.get(f"/instances/{ref}/file", accept="application/dicom")
        return bytes(body)

    def done(self, ref: Any, sop_uid: str | None) -> None:
        return None

    def expected_count(self, ref: Any) -> int | None:
        """The change feed does not say how many instances a study has."""
        return None


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _count(value: Any) -> int | None:
    """A positive instance count from a QIDO value (a JSON number, or a string), else None."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return None
    return count if count > 0 else None


class QidoFeed:
    """Any DICOMweb PACS: compare per-study instance counts, fetch what is unseen."""

    def __init__(self, http: Any, config: PollSourceConfig, cursor: Cursor) -> None:
        self.http, self.config, self.cursor = http, config, cursor
        self.counts: dict[str, int | None] = {}  # NumberOfStudyRelatedInstances, last round

    async def _search(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every QIDO-RS result, page by page (limit/offset)."""
        out: list[dict[str, Any]] = []
        size = self.config.batch_size
        while True:
            body, _ = await self.http.get(path, {**params, "limit": str(size),
                                                 "offset": str(len(out))},
                                          accept="application/dicom+json")
            try:
                page = json.loads(body) if body.strip() else []
            except ValueError as exc:
                raise PeerUnavailable(f"QIDO {path}: not JSON") from exc
            out.extend(page)
            if len(page) < size:
                return out

    async def changes(self) -> Batch:
        today = dt.date.today()
        since = today - dt.timedelta(days=self.config.lookback_days)
        studies = await self._search("/studies", {
            "StudyDate": f"{since:%Y%m%d}-{today:%Y%m%d}", "includefield": "00201208"})
        baseline = self.cursor.seq is None and self.config.start_from == "now"
        counts: dict[str, Any] = {}
        refs: list[tuple[str, str, str]] = []
        for study in studies:
            uid, count = _first(study, "0020000D"), _first(study, "00201208")
            if not uid:
                continue
            counts[uid] = count
            state = self.cursor.studies.get(uid)
            if state is not None and count is not None and state.get("count") == count:
                continue
            refs.extend(await self._unseen(uid, set(state["seen"]) if state else set()))
        if baseline:  # start_from "now": what is there already counts as seen
            for study_uid, _, sop in refs:
                self.done((study_uid, "", sop), sop)
            refs = []
        self.counts = {uid: _count(count) for uid, count in counts.items()}
        return Batch(refs, False, lambda: self._commit(counts))

    async def _unseen(self, study: str, seen: set[str]) -> list[tuple[str, str, str]]:
        found = await self._search(f"/studies/{study}/instances",
                                   {"includefield": "0020000E"})
        refs = []
        for item in found:
            series, sop = _first(item, "0020000E"), _first(item, "00080018")
            if series and sop and sop not in seen:
                refs.append((study, series, sop))
        return refs

    def _commit(self, counts: dict[str, Any]) -> None:
        studies = self.cursor.studies
        for uid in list(studies):
            if uid not in counts:  # left the StudyDate window
                del studies[uid]
        for uid, count in counts.items():
            studies.setdefault(uid, {"seen": []})["count"] = count
        self.cursor.seq = 0  # marks that a first round (the baseline) is done

    async def fetch(self, ref: Any) -> bytes:
        study, series, sop = ref
        body, headers = await self.http.get(
            f"/studies/{study}/series/{series}/instances/{sop}", accept=WADO_ACCEPT)
        return first_part(bytes(body), headers.get("Content-Type", ""))

    def done(self, ref: Any, sop_uid: str | None) -> None:
        study, _, sop = ref
        self.cursor.studies.setdefault(study, {"seen": [], "count": None})["seen"].append(sop)

    def expected_count(self, ref: Any) -> int | None:
        """The study's NumberOfStudyRelatedInstances (0020,1208) as QIDO-RS last gave it."""
        return self.counts.get(ref[0])


def first_part(body: bytes, content_type: str) -> bytes:
    """The first body part of a multipart/related WADO-RS response."""
    boundary = parse_mimetype(content_type).parameters.get("boundary", "").strip('"')
    if not boundary:
        raise PeerUnavailable("WADO-RS answer is not multipart")
    delimiter = b"--" + boundary.encode()
    start = body.find(delimiter)
    head_end = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + delimiter, head_end)
    if start < 0 or head_end < 0 or end < 0:
        raise PeerUnavailable("WADO-RS answer has no complete part")
    return body[head_end + 4:end]


FEEDS: dict[str, Callable[[Any, PollSourceConfig, Cursor], Feed]] = {
    "orthanc": OrthancFeed, "qido": QidoFeed}
