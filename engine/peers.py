"""Who may connect to a listener, and how many connections each address may hold.

Shared by the MLLP listener and the HTTP listeners (STOW-RS, admin API; see
``engine.httplimits``), and protocol-agnostic: a listener asks its ``PeerGate`` to ``admit``
each new connection by the peer's IP address and ``release``\\ s it when the connection ends.
The gate answers why a connection is refused; the listener decides how (MLLP closes at once,
HTTP answers 503 for a limit) and logs it with its own event code. Three checks, in order:

* ``allow``: when set, only these addresses or CIDR networks may connect; any other is
  refused at once (``NOT_ALLOWED``), before it can send a byte that is read.
* ``max_connections``: the listener's total (``LIMIT``).
* ``max_connections_per_peer``: one peer cannot hold every slot (``PEER_LIMIT``), so a
  client that opens hundreds of idle connections leaves room for the others. Behind a
  reverse proxy every client shares the proxy's address: raise it to ``max_connections``.

A peer (``peer_key``) is one IPv4 address, or one IPv6 /64 network: a single IPv6 host is
handed a whole /64 and can connect from any of its 2^64 addresses, so counting per IPv6
address would limit nothing. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, from a
dual-stack listener) count and match as the IPv4 address they carry. The gate is not
thread-safe: a listener that admits and releases from several threads holds a lock.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from pydantic import Field, field_validator

from engine.config.base import Strict

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NOT_ALLOWED = "not allowed"
LIMIT = "connection limit"
PEER_LIMIT = "per-peer connection limit"


def parse_network(value: str) -> IPNetwork:
    """``"10.0.0.0/8"``, ``"127.0.0.1"`` or ``"::1"`` -> a network; ``ValueError`` names it."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


class PeerLimitsConfig(Strict):
    """Per-address limits of a listener (see ``engine.peers``)."""

    max_connections_per_peer: int = Field(
        64, ge=1, description="Connections one peer may hold at once (a peer: one IPv4 "
                              "address, or one IPv6 /64 network, which a single host may "
                              "own); further ones from it are refused like those over the "
                              "listener's total. Behind a reverse proxy, raise it to the "
                              "total.")
    allow: list[str] | None = Field(
        None, description='Only these addresses or CIDR networks may connect, e.g. '
                          '["127.0.0.1", "10.0.0.0/8"]; others are closed at once and logged. '
                          "Absent: any address.")

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            parse_network(item)
        return value


def peer_ip(peername: Any) -> IPAddress | None:
    """The IP address of a socket's ``peername`` (None for a Unix socket or an odd value)."""
    if not isinstance(peername, tuple) or not peername:
        return None
    try:
        ip = ipaddress.ip_address(str(peername[0]).partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


PeerKey = ipaddress.IPv4Address | ipaddress.IPv6Network | None


def peer_key(ip: IPAddress | None) -> PeerKey:
    """What ``max_connections_per_peer`` counts *ip* under: an IPv4 address as itself, an
    IPv6 address as its /64 network (None, no address, is one peer of its own)."""
    if isinstance(ip, ipaddress.IPv6Address):
        return ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
    return ip


class PeerGate:
    """Counts a listener's open connections per peer address and decides who may connect."""

    def __init__(self, max_connections: int, config: PeerLimitsConfig) -> None:
        self.max_connections = max_connections
        self.max_per_peer = config.max_connections_per_peer
        self.networks = (tuple(parse_network(a) for a in config.allow)
                         if config.allow is not None else None)
        self.open: Counter[PeerKey] = Counter()  # open connections per peer_key
        self.total = 0
        self.refused: Counter[str] = Counter()

    def admit(self, ip: IPAddress | None) -> str | None:
        """Count a new connection from *ip*; None if admitted, else why it is refused.

        A refused connection is not counted (do not ``release`` it).
        """
        reason = self._refusal(ip)
        if reason is not None:
            self.refused[reason] += 1
            return reason
        self.open[peer_key(ip)] += 1
        self.total += 1
        return None

    def screen(self, ip: IPAddress | None) -> str | None:
        """The allow-list alone, for a listener that checks it before a TLS handshake:
        ``NOT_ALLOWED`` (counted as refused) or None. Counts no connection: ``admit`` follows."""
        if self.allows(ip):
            return None
        self.refused[NOT_ALLOWED] += 1
        return NOT_ALLOWED

    def allows(self, ip: IPAddress | None) -> bool:
        """Whether *ip* is on the allow-list (any address when there is none)."""
        return self.networks is None or ip is not None and any(
            ip.version == net.version and ip in net for net in self.networks)

    def _refusal(self, ip: IPAddress | None) -> str | None:
        if not self.allows(ip):
            return NOT_ALLOWED
        if self.total >= self.max_connections:
            return LIMIT
        if self.open[peer_key(ip)] >= self.max_per_peer:
            return PEER_LIMIT
        return None

    def release(self, ip: IPAddress | None) -> None:
        """An admitted connection from *ip* has closed."""
        key = peer_key(ip)
        self.total -= 1
        left = self.open[key] - 1
        if left > 0:
            self.open[key] = left
        else:
            del self.open[key]
