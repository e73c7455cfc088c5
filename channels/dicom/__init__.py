"""DICOM DIMSE source: a C-STORE SCP (pynetdicom) feeding ``engine.flow.instances``.

``config`` holds the typed config model, ``status`` the one table mapping
ingest errors to DICOM status codes (shared with STOW-RS), ``scp`` the
threaded pynetdicom server, ``scu`` the C-STORE destination (results to a PACS).
"""

from channels.dicom import scp, scu  # noqa: F401  (registration)
