"""DICOMweb sources: a STOW-RS receiver and a poller for PACS that push nothing.

``stow`` serves POST /studies (aiohttp, streamed multipart), ``response``
builds the PS3.18 Store Instances Response, ``multipart`` reads request
bodies, ``poller`` runs the polling loop and keeps its position durably,
``feeds`` knows Orthanc's change feed and QIDO-RS/WADO-RS, ``destination``
stores our results on a PACS with STOW-RS.
"""

from channels.dicomweb import destination, poller, stow  # noqa: F401  (registration)
