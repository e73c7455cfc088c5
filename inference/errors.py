"""Inference errors. Retry-or-fail is decided by type.

::

    RadbridgeError
    └── InferenceError
        ├── ModelLoadError          the model cannot be used (file, format, device): its jobs fail
        │   └── ChecksumMismatch    the file is not the one configured (sha256): refused
        ├── NotApplicable           the study has nothing this model can read: final, no retry
        │   └── PreprocessError     the pixels cannot be decoded or prepared: final, no retry
        ├── DeidentificationRefused an external model may not see this study: final, no retry
        └── TransientInferenceError retry with backoff until the attempts are used up
            ├── InferenceTimeout    the forward pass took longer than timeout_secs
            ├── ForwardError        the model raised (out of memory, a bad batch ...)
            └── ServerUnavailable   a remote model's server does not answer: wait for it,
                                    however long, without using up attempts
"""

from __future__ import annotations

from engine.errors import RadbridgeError


class InferenceError(RadbridgeError):
    """Base of inference errors; ``str()`` never quotes patient data."""


class ModelLoadError(InferenceError):
    """The model could not be loaded; every job for it fails with this reason."""


class ChecksumMismatch(ModelLoadError):
    """The model file's SHA-256 is not the configured one."""


class NotApplicable(InferenceError):
    """The study has nothing this model can use (e.g. no frontal view)."""


class PreprocessError(NotApplicable):
    """Pixel data could not be decoded or prepared."""


class DeidentificationRefused(InferenceError):
    """De-identification cannot be guaranteed (e.g. burned-in annotation)."""


class TransientInferenceError(InferenceError):
    """Try again later."""


class InferenceTimeout(TransientInferenceError):
    """The forward pass did not finish within the model's timeout."""


class ForwardError(TransientInferenceError):
    """The model raised during the forward pass."""


UNAVAILABLE = "server unavailable: "  # how the reason of a job waiting for its server starts


class ServerUnavailable(TransientInferenceError):
    """A remote model's server is down, unreachable or overloaded (503): the job is retried
    at a steady pace for as long as that lasts, like a delivery to a destination that is
    down, and the wait does not count against its retries."""
