"""Per-peer limits count an IPv6 peer per /64 (issue 12, finding 7, left undone).

An IPv6 host is handed a whole /64 and may connect from any of its 2^64 addresses, so a
limit per IPv6 address limited nothing. ``engine.peers`` keys IPv6 peers by their /64 and
IPv4 peers by their address. This machine's loopback has one IPv6 address (``::1``), so
two addresses of one /64 cannot both connect here: the keying is tested with addresses,
and ``::1`` over real sockets in ``tests/integration/test_hardening_exhaustion.py``.
"""

from __future__ import annotations

import ipaddress

import pytest

from engine.config.schema import lint_text
from engine.peers import PEER_LIMIT, PeerGate, PeerLimitsConfig, peer_ip, peer_key


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    found = peer_ip((text, 0))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack listener's view of an IPv4 peer
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),  # the zone index is not part of the address
        ("::1", "::/64"),
    ],
)
def test_an_ipv4_peer_is_its_address_and_an_ipv6_peer_its_64(address: str, key: str) -> None:
    assert str(peer_key(ip(address))) == key


def test_addresses_of_one_ipv6_64_share_the_per_peer_limit_and_another_64_does_not() -> None:
    gate = PeerGate(100, PeerLimitsConfig(max_connections_per_peer=2))
    rotating = [ip(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]  # one host, new addresses
    assert [gate.admit(a) for a in rotating] == [None, None, PEER_LIMIT]
    assert gate.admit(ip("2001:db8:1:3::1")) is None  # the next /64: another peer
    assert [gate.admit(ip("192.0.2.1")), gate.admit(ip("192.0.2.2"))] == [None, None]
    assert gate.open[peer_key(rotating[0])] == 2
    gate.release(rotating[1])  # released under its /64, whichever address it came from
    assert gate.admit(ip("2001:db8:1:2::99")) is None
    assert gate.total == 5


def test_the_allow_list_still_matches_the_exact_ipv6_address() -> None:
    gate = PeerGate(10, PeerLimitsConfig(allow=["2001:db8:1:2::1/128"]))
    assert gate.admit(ip("2001:db8:1:2::1")) is None
    assert gate.admit(ip("2001:db8:1:2::2")) == "not allowed"  # same /64, not on the list


def test_a_bad_dicom_allow_entry_or_per_peer_limit_is_a_lint_error_naming_the_key() -> None:
    text = ('[[channel]]\nname = "pacs"\nsource = { type = "dicom", ae_title = "RB", '
            'listen = ":104", allow = ["10.0.0.0/8", "modalities"], '
            "max_connections_per_peer = 0 }\n")
    _, problems = lint_text(text, "c.toml")
    found = {(p.line, p.key): p.message for p in problems}
    assert set(found) == {(3, "channel[0].source.allow"),
                          (3, "channel[0].source.max_connections_per_peer")}
    assert "'modalities' is not an IP address or CIDR network" in found[
        (3, "channel[0].source.allow")]
