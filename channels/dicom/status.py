"""Map ingest outcomes to DICOM status codes, shared by C-STORE and STOW-RS.

One table, so a modality and a DICOMweb client hear the same answer for the
same problem. Codes (PS3.4 Annex B.2.3 for C-STORE, PS3.18 10.5.3 for STOW
FailureReason, PS3.7 Annex C for the general ones):

=======  ==================================================  ===========================
code     meaning                                             raised by
=======  ==================================================  ===========================
0x0000   success: the instance is durable and indexed        -
0xA700   refused, out of resources: the store is down        ``StoreUnavailable``, OSError
0xA701   refused, out of resources: not indexed in time      ``TimeoutError``
0xA900   error: data set does not match the request's UIDs  C-STORE request check
0xA900   error: a UID breaks the DICOM UID grammar           ``InvalidUID``
0xC000   error, cannot understand: not a usable instance     ``InvalidInstance``
0xC211   error, unable to process (C-STORE): a bug of ours   anything else
0x0110   processing failure (STOW FailureReason): a bug      anything else
0xC409   error: Study Instance UID does not match the URL    STOW /studies/{study}
=======  ==================================================  ===========================

0xA7xx tells the sender to try again later; 0xCxxx tells it that resending
the same bytes will fail again.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import StoreUnavailable
from engine.flow.instances import InvalidInstance, InvalidUID

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
STORE_TIMEOUT = 0xA701
MISMATCH = 0xA900  # PS3.4 B.2.3 "data set does not match SOP class"; also an invalid UID
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = 0xC211
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xC409


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed instance: its status code, a PHI-free comment and whether to retry."""

    code: int
    comment: str
    transient: bool


def classify(exc: BaseException, dimse: bool = True) -> Failure:
    """The status answering *exc*; ``dimse=False`` gives STOW's FailureReason codes."""
    if isinstance(exc, InvalidUID):
        return Failure(MISMATCH, exc.reason, False)
    if isinstance(exc, InvalidInstance):
        return Failure(CANNOT_UNDERSTAND, exc.reason, False)
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return Failure(STORE_TIMEOUT, "store did not answer in time, retry later", True)
    if isinstance(exc, StoreUnavailable | OSError):
        return Failure(OUT_OF_RESOURCES, "store unavailable, retry later", True)
    code = UNABLE_TO_PROCESS if dimse else PROCESSING_FAILURE
    return Failure(code, f"internal error ({type(exc).__name__})", False)


def error_comment(text: str) -> str:
    """An ErrorComment value: LO, at most 64 characters, no backslash or control chars."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c != "\\" else " " for c in text)
    return clean[:64]
