"""PostgreSQL implementation of ``FhirStore``: the portable SQL of ``fhir_sql`` with
PostgreSQL placeholders; writes run in the writer's transaction (with the worklist update
that carried them)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.store import fhir_sql as q
from engine.store.pg_schema import pg
from radbridge_fhir.ids import storable

_UPSERT, _UNINDEX, _INDEX = pg(q.UPSERT), pg(q.UNINDEX), pg(q.INDEX)


async def save_fhir_op(conn: asyncpg.Connection, case_id: int | None,
                       resources: Sequence[dict[str, Any]]) -> None:
    """Upsert *resources* and their search keys."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    stored = storable(resources)
    for res in stored:
        res.setdefault("meta", {})["lastUpdated"] = stamp
        await conn.execute(_UPSERT, res["resourceType"], res["id"], case_id,
                           json.dumps(res, sort_keys=True, separators=(",", ":")), now)
        await conn.execute(_UNINDEX, res["resourceType"], res["id"])
    rows = q.index_rows(stored)
    if rows:
        await conn.executemany(_INDEX, rows)


class PgFhir(q.FhirReads):
    """Mixed into ``PostgresStore``: the shared search, and saves through its writer task."""

    _write: Any

    async def save_fhir_resources(self, case_id: int, resources: Sequence[dict[str, Any]]
                                  ) -> None:
        await self._write(save_fhir_op, case_id, list(resources))
