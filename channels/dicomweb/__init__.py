"""DICOMweb sources: a STOW-RS receiver and a poller for PACS that push nothing.

``stow`` serves POST /studies (aiohttp, streamed multipart), ``response``
builds the PS3.18 Store Instances Response, ``multipart`` reads request
bodies, ``poller`` runs the polling loop and keeps its position durably,
``feeds`` knows Orthanc's change feed and QIDO-RS/WADO-RS.
"""

from channels.dicomweb import poller, stow  # noqa: F401  (registration)
