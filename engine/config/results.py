"""Configuration of the results side: the ``ai_results`` source and ``[[escalation]]`` rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.config.base import Strict


class AIResultsSourceConfig(Strict):
    """``source = { type = "ai_results" }``: the channel that turns finished inference into
    results. Each finished case becomes one message (its AI report, JSON) on this channel; the
    channel's ``forward_to`` destinations each get what their type sends: ORU^R01 (mllp),
    a transaction Bundle (fhir_rest), one SR per model (dicom, dicomweb_stow), an alert for a
    raised priority (webhook); destinations named in ``order_updates_to`` get the order update
    (ORC-1 XO with the new priority) instead of the ORU."""

    type: Literal["ai_results"]
    oru_version: Literal["2.5.1", "2.3.1"] = Field(
        "2.5.1", description="HL7 version of the ORU^R01 (2.3.1 for older receivers).")
    sending_application: str | None = Field(
        None, description="MSH-3 of what we send (default: [engine] app_name).")
    sending_facility: str | None = Field(
        None, description="MSH-4 of what we send (default: [engine] facility).")
    receiving_application: str | None = Field(None, description="MSH-5.")
    receiving_facility: str | None = Field(None, description="MSH-6.")
    order_updates_to: list[str] = Field(
        default_factory=list, description="HL7 destinations (also in forward_to) that get the "
        "worklist priority update for the RIS instead of the ORU, when AI raised a priority.")
    order_update_message: Literal["ORM^O01", "OMI^O23"] = "ORM^O01"
    priority_field: Literal["ORC-7.6", "TQ1-9"] = Field(
        "ORC-7.6", description="Where the order update carries the priority.")
    alert_priority: Literal["STAT", "URGENT"] = Field(
        "STAT", description="Webhook destinations are sent an alert when AI raises a case to "
        "this priority or above.")


class EscalationRule(Strict):
    """``[[escalation]]``: when an AI finding meets it, the case's reading priority is raised.

    A rule matches a finding by ``code`` (and optionally ``model``), or by ``criticality``;
    ``min_probability`` must be met. Without any rule, critical findings raise to STAT and
    high ones to URGENT. Shadow-mode findings never raise a priority."""

    code: str | None = Field(None, description="Finding code (e.g. SNOMED CT 36118008).")
    criticality: Literal["low", "high", "critical"] | None = None
    model: str | None = Field(None, description="Only findings of this model.")
    min_probability: float = Field(0.0, ge=0, le=1)
    priority: Literal["STAT", "URGENT"]

    @model_validator(mode="after")
    def _matches_something(self) -> EscalationRule:
        if self.code is None and self.criticality is None:
            raise ValueError("an escalation rule needs a code or a criticality")
        return self


DEFAULT_ESCALATION = [EscalationRule(criticality="critical", priority="STAT"),
                      EscalationRule(criticality="high", priority="URGENT")]
