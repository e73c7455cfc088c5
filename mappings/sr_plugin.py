"""What DICOM SR plugs into the engine: the ``dicom`` result payload, one TID 1500
Comprehensive 3D SR per model run of the report (``mappings.dicom_sr``, imported when
first used: highdicom is slow to load)."""

from __future__ import annotations

from engine.registry import register_payload
from engine.results.model import ResultBuild


@register_payload("dicom", "one TID 1500 SR per model (Part 10)")
def sr_payloads(job: ResultBuild) -> list[tuple[str, bytes]]:
    from mappings.dicom_sr import build_sr, sr_part10

    return [(f"sr:{run.name}", sr_part10(build_sr(job.report, run)))
            for run in job.report.models]
