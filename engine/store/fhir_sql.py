"""``FhirStore`` written once for both stores: one row per resource, one index of search keys.

Portable SQL (SQLite and PostgreSQL both take it with their own placeholders),
the JSON kept as TEXT. ``fhir_index`` holds what ``search_fhir`` can match on:
each identifier (kind ``identifier``: system, value) and the patient a
resource is about (kind ``patient``: the Patient's id; a Provenance is about
its targets' patients). Writes run on the writer's ``Tx`` in its transaction.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.store.fhir import FhirStore
from engine.store.tx import Tx, WriterStore

FHIR_SCHEMA = """
CREATE TABLE IF NOT EXISTS fhir_resources (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, case_id INTEGER,
    body TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (resource_type, resource_id));
CREATE INDEX IF NOT EXISTS fhir_resources_case ON fhir_resources (case_id);
CREATE TABLE IF NOT EXISTS fhir_index (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, kind TEXT NOT NULL,
    system TEXT, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS fhir_index_key ON fhir_index (kind, value);
CREATE INDEX IF NOT EXISTS fhir_index_resource ON fhir_index (resource_type, resource_id);
"""

UPSERT = ("INSERT INTO fhir_resources (resource_type, resource_id, case_id, body, updated_at)"
          " VALUES (?,?,?,?,?) ON CONFLICT (resource_type, resource_id) DO UPDATE SET"
          " case_id = excluded.case_id, body = excluded.body, updated_at = excluded.updated_at")
UNINDEX = "DELETE FROM fhir_index WHERE resource_type = ? AND resource_id = ?"
INDEX = ("INSERT INTO fhir_index (resource_type, resource_id, kind, system, value)"
         " VALUES (?,?,?,?,?)")
_SUBJECT_KEYS = ("subject", "patient", "for")


def _patient_of(res: dict[str, Any]) -> str | None:
    if res["resourceType"] == "Patient":
        return str(res["id"])
    for key in _SUBJECT_KEYS:
        ref = (res.get(key) or {}).get("reference") if isinstance(res.get(key), dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref.removeprefix("Patient/")
    return None


def index_rows(resources: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The search keys of *resources* (each with its ``id``)."""
    patients = {f"{r['resourceType']}/{r['id']}": _patient_of(r) for r in resources}
    rows: list[tuple[Any, ...]] = []
    for res in resources:
        rtype, rid = res["resourceType"], res["id"]
        for ident in res.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value"):
                rows.append((rtype, rid, "identifier", ident.get("system"), ident["value"]))
        about = {patients[f"{rtype}/{rid}"]}
        if rtype == "Provenance":
            about |= {patients.get(t.get("reference", "")) for t in res.get("target") or []}
        rows += [(rtype, rid, "patient", None, pid) for pid in sorted(a for a in about if a)]
    return rows


async def save_fhir_op(tx: Tx, case_id: int | None, resources: Sequence[dict[str, Any]]
                       ) -> None:
    """Upsert *resources* (each with its ``id``: see ``FhirStore.save_fhir_resources``) and
    their search keys (in the writer's transaction)."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    stored = copy.deepcopy(list(resources))
    for res in stored:
        res.setdefault("meta", {})["lastUpdated"] = stamp
        await tx.execute(UPSERT, res["resourceType"], res["id"], case_id,
                         json.dumps(res, sort_keys=True, separators=(",", ":")), now)
        await tx.execute(UNINDEX, res["resourceType"], res["id"])
    await tx.executemany(INDEX, index_rows(stored))


def _token(value: str) -> tuple[str | None, str | None]:
    """``system|value`` -> (system or None, value or None); a bare value -> (None, value)."""
    if "|" not in value:
        return None, value
    system, _, val = value.partition("|")
    return system or None, val or None


def _identifier_clause(alias: str, token: str) -> tuple[str, list[Any]]:
    system, value = _token(token)
    parts, params = [f"{alias}.kind = 'identifier'"], []
    if system is not None:
        parts.append(f"{alias}.system = ?")
        params.append(system)
    if value is not None:
        parts.append(f"{alias}.value = ?")
        params.append(value)
    return " AND ".join(parts), params


def search_sql(resource_type: str, resource_id: str | None, patient: str | None,
               identifier: str | None, limit: int) -> tuple[str, list[Any]]:
    where, params = ["r.resource_type = ?"], [resource_type]
    same = "i.resource_type = r.resource_type AND i.resource_id = r.resource_id"
    if resource_id is not None:
        where.append("r.resource_id = ?")
        params.append(resource_id)
    if identifier is not None:
        clause, more = _identifier_clause("i", identifier)
        where.append(f"EXISTS (SELECT 1 FROM fhir_index i WHERE {same} AND {clause})")
        params += more
    if patient is not None:
        if patient.startswith("Patient/"):
            match, more = "i.value = ?", [patient.removeprefix("Patient/")]
        else:
            clause, more = _identifier_clause("q", patient)
            ids = ("SELECT q.resource_id FROM fhir_index q WHERE q.resource_type = 'Patient'"
                   f" AND {clause}")
            if "|" in patient:  # a patient identifier token only
                match = f"i.value IN ({ids})"
            else:  # a Patient id, or an identifier value in any system
                match, more = f"(i.value = ? OR i.value IN ({ids}))", [patient, *more]
        where.append(f"EXISTS (SELECT 1 FROM fhir_index i WHERE {same} AND i.kind = 'patient'"
                     f" AND {match})")
        params += more
    sql = (f"SELECT body FROM fhir_resources r WHERE {' AND '.join(where)}"
           " ORDER BY r.updated_at DESC, r.resource_id LIMIT ?")
    return sql, [*params, limit]


class FhirReads(FhirStore):
    """FHIR searches, written once in portable SQL and run by each store's ``_rows``."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def search_fhir(self, resource_type: str, *, resource_id: str | None = None,
                          patient: str | None = None, identifier: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        sql, params = search_sql(resource_type, resource_id, patient, identifier, limit)
        return [json.loads(row[0]) for row in await self._rows(sql, *params)]


class FhirWrites(FhirReads, WriterStore):
    """The shared search, and saves in the store's writer transaction (``_transact``)."""

    async def save_fhir_resources(self, case_id: int, resources: Sequence[dict[str, Any]]
                                  ) -> None:
        for res in resources:
            if not res.get("resourceType") or not res.get("id"):
                raise ValueError(f"{res.get('resourceType') or 'a resource'} has no id")
        await self._transact(save_fhir_op, case_id, list(resources))
