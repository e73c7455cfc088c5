"""DICOM DIMSE source: a C-STORE SCP (pynetdicom) feeding ``engine.instances``.

``config`` holds the typed config model, ``status`` the one table mapping
ingest errors to DICOM status codes (shared with STOW-RS), ``scp`` the
threaded pynetdicom server.
"""

from channels.dicom import scp  # noqa: F401  (registration)
