"""The FHIR side of the store: the resources each AI report produced, for EHRs that pull.

The results channel builds one transaction Bundle per report and saves its
resources here (in the same transaction as the worklist update, see
``engine.store.results_sql``); the admin API serves them read-only under
``/fhir`` (``engine.admin.routes_fhir``). A resource is kept as the FHIR JSON a
server would hold: its ``id`` is the uuid of its bundle ``fullUrl`` and its
``urn:uuid:`` references are rewritten to ``Type/id``. The FHIR package does that
(``radbridge_fhir.ids.storable``, in the ``fhir`` payload's preparation) before the
store sees them; the store only keeps and indexes what it is given, by (type, id).
So a replay of a report replaces its resources, and every report of one patient
points at one Patient.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any


class FhirStore(abc.ABC):
    @abc.abstractmethod
    async def save_fhir_resources(self, case_id: int, resources: Sequence[dict[str, Any]]
                                  ) -> None:
        """Upsert *resources* by (type, id): each as a server holds it, ``id`` set and
        references ``Type/id`` (``radbridge_fhir.ids.storable`` makes them so).
        Raises ``ValueError`` for a resource without ``resourceType`` or ``id`` (nothing is
        saved), ``StoreUnavailable`` (retry later) or ``StoreError``."""

    @abc.abstractmethod
    async def search_fhir(self, resource_type: str, *, resource_id: str | None = None,
                          patient: str | None = None, identifier: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        """Resources of *resource_type*, newest first, matching every criterion given.

        ``patient``: ``Patient/<id>``, a bare id, a patient identifier value, or
        ``system|value`` of a patient identifier. ``identifier``: ``system|value``, ``value``
        or ``system|`` (any value in that system) of the resource's own identifiers.
        Raises ``StoreUnavailable`` (retry later) or ``StoreError``."""
