"""Routing: which models run on a case, and in which lane.

Every ``[[route]]`` whose ``when`` matches contributes its models (in route
order, each model once). A ``when`` key matches when the case's value equals
one of the listed values (case-insensitive; a value ending in ``*`` matches
by prefix); a key the case has no value for does not match; an empty
``when`` matches every case. No match: the case closes as "no model applies".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.config.inference import MATCH_KEYS, RouteConfig
from engine.store.inference import LANE_ROUTINE, LANE_STAT, CaseContext

STAT_PRIORITIES = frozenset({"S", "STAT"})
EMERGENCY_CLASSES = frozenset({"E"})
EMERGENCY_LOCATIONS = ("ED", "ER", "EMERG")


@dataclass(slots=True)
class Plan:
    models: list[str]
    lane: int
    routes: list[str] = field(default_factory=list)
    reason: str | None = None  # why no model applies (ids and codes only, no patient data)


def _values(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [v.upper() for v in ([value] if isinstance(value, str) else value)]


def _matches(wanted: list[str], actual: str | None) -> bool:
    if actual is None:
        return False
    actual = actual.strip().upper()
    return any(actual.startswith(w[:-1]) if w.endswith("*") else actual == w for w in wanted)


def lane_for(case: CaseContext) -> int:
    """STAT orders and emergency patients (class E, or a location like ED) go first."""
    if (case.priority or "").upper() in STAT_PRIORITIES:
        return LANE_STAT
    if (case.patient_class or "").upper() in EMERGENCY_CLASSES:
        return LANE_STAT
    location = (case.location or "").upper()
    if any(location == p or location.startswith(p + " ") for p in EMERGENCY_LOCATIONS):
        return LANE_STAT
    return LANE_ROUTINE


class Router:
    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = list(routes)

    def route_matches(self, route: RouteConfig, case: CaseContext) -> bool:
        for key in MATCH_KEYS:
            wanted = _values(getattr(route.when, key))
            if wanted is not None and not _matches(wanted, getattr(case, key)):
                return False
        return True

    def route(self, case: CaseContext) -> Plan:
        models: list[str] = []
        names: list[str] = []
        for i, route in enumerate(self.routes):
            if self.route_matches(route, case):
                names.append(route.name or f"route[{i}]")
                models += [m for m in route.models if m not in models]
        reason = None
        if not models:
            reason = (f"no model applies (modality={case.modality or '-'}"
                      f" body_part={case.body_part or '-'}"
                      f" procedure={case.procedure_code or '-'})")
        return Plan(models, lane_for(case), names, reason)
