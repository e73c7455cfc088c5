"""MLLP over TCP (optionally TLS): source and destination.

``framing`` is pure bytes; ``server`` owns the listening sockets; ``client``
is one persistent connection used by the destination and by ``radbridge send``.
"""

from channels.mllp import destination, server  # noqa: F401  (registration)
