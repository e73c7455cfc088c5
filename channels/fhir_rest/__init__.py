"""FHIR REST destination: transaction Bundles to a FHIR R4 server (registers ``fhir_rest``)."""

from channels.fhir_rest.config import FhirRestConfig
from channels.fhir_rest.destination import FhirRestDestination

__all__ = ["FhirRestConfig", "FhirRestDestination"]
