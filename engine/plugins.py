"""The plugin loader: with the CLI entry points, the composition root of radbridge.

The engine knows no protocol. The packages that do (``channels``, ``mappings``,
``radbridge_fhir``, ``inference``) register their connectors, processors, payload builders,
answerers and admin views with ``engine.registry`` when imported; this module is the one
place outside the CLI that imports them. The registry calls ``load`` the first time it is
asked for anything, so every entry point (``radbridge run``/``worker``/``lint``/``list``,
the tests, ``python -m engine.admin``) sees the same set; calling it again is free.
"""

from __future__ import annotations

_loaded = False


def load() -> None:
    """Import every built-in package so that it registers (idempotent)."""
    global _loaded
    if _loaded:
        return
    import channels.dicom  # noqa: F401
    import channels.dicomweb  # noqa: F401
    import channels.fhir_rest  # noqa: F401
    import channels.file  # noqa: F401
    import channels.mllp  # noqa: F401
    import channels.webhook  # noqa: F401
    import engine.flow.processors  # noqa: F401
    import engine.results.channel  # noqa: F401
    import inference.service  # noqa: F401
    import mappings.hl7v2.answerer  # noqa: F401
    import mappings.hl7v2.diff  # noqa: F401
    import mappings.hl7v2.plugin  # noqa: F401
    import mappings.hl7v2.steps  # noqa: F401
    import mappings.hl7v2.view  # noqa: F401
    import mappings.sr_plugin  # noqa: F401
    import radbridge_fhir.plugin  # noqa: F401

    _loaded = True
