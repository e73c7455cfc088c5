"""The brake on password guessing: attempts are reserved before any password is hashed.

Three limits, all over a sliding window (``window_secs``, 300 s):

* **per (name, client)**: ``pair_failures`` (5) failures lock that name out *for that
  client address* only. A guesser cannot lock the admin out from elsewhere.
* **per client**: ``client_failures`` (20) failures from one address, whatever the names,
  lock that address out (IPv6 clients count per /64: one host owns the whole prefix).
* **per name**: once a name has ``name_failures`` (10) failures from all clients together,
  its checks are slowed to one per ``name_interval_secs`` (1 s): many addresses guessing one
  name get about one guess a second between them, and its owner, from a clean address,
  is at worst asked to retry a second later, never locked out.

Concurrency: ``reserve`` checks and records in one synchronous call on the event loop, so
100 concurrent guesses cannot all pass the check before the first is recorded; every
reservation counts as a failure until ``succeeded`` takes it back.

Memory: names are keyed by a 16-byte digest, clients by their address (or /64); each table
keeps at most ``max_entries`` keys (least recently used forgotten first) and drops the ones
whose window has passed. Forgetting under a flood of addresses can only lift a limit early.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ticket:
    """A reserved attempt: hand it back to ``succeeded`` (or leave it as a failure)."""

    name: bytes
    client: str
    at: float


class _Recent:
    """Recent failure times per key: a bounded LRU table of bounded deques."""

    def __init__(self, limit: int, window: float, max_entries: int) -> None:
        self.limit, self.window, self.max_entries = limit, window, max_entries
        self._table: OrderedDict[object, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def wait(self, key: object, now: float) -> float:
        """Seconds until *key* is under its limit again (0: it is now)."""
        times = self._live(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, self.window - (now - times[0]))

    def count(self, key: object, now: float) -> int:
        times = self._live(key, now)
        return 0 if times is None else len(times)

    def add(self, key: object, now: float) -> None:
        times = self._table.get(key)
        if times is None:
            times = self._table[key] = deque(maxlen=self.limit)
        times.append(now)
        self._table.move_to_end(key)
        while len(self._table) > self.max_entries:  # the least recently used first
            self._table.popitem(last=False)
        for old in list(itertools.islice(self._table, 8)):  # sweep a few expired ones
            stale = self._table[old]
            if stale and now - stale[-1] < self.window:
                break
            del self._table[old]

    def take_back(self, key: object, at: float) -> None:
        times = self._table.get(key)
        if times is not None and at in times:
            times.remove(at)
            if not times:
                del self._table[key]

    def clear(self, key: object) -> None:
        self._table.pop(key, None)

    def _live(self, key: object, now: float) -> deque[float] | None:
        times = self._table.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._table[key]
            return None
        self._table.move_to_end(key)
        return times


def client_key(remote: str | None) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64."""
    try:
        addr = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "?"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network(((int(addr) >> 64) << 64, 64)))
    return str(addr)


class LoginThrottle:
    """Per-(name, client) lockout, per-client lockout, per-name slowing (see the module)."""

    def __init__(
        self,
        *,
        pair_failures: int = 5,
        client_failures: int = 20,
        name_failures: int = 10,
        name_interval_secs: float = 1.0,
        window_secs: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_secs, self.name_interval_secs, self.clock = (
            window_secs,
            name_interval_secs,
            clock,
        )
        self.pairs = _Recent(pair_failures, window_secs, max_entries)
        self.clients = _Recent(client_failures, window_secs, max_entries)
        self.names = _Recent(name_failures, window_secs, max_entries)
        self._name_last: OrderedDict[bytes, float] = OrderedDict()
        self.max_entries = max_entries

    @staticmethod
    def name_key(name: str) -> bytes:
        return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def reserve(self, name: str, client: str) -> Ticket | float:
        """A ticket to check one password now, or the seconds to wait before trying."""
        now, key = self.clock(), self.name_key(name)
        wait = max(self.clients.wait(client, now), self.pairs.wait((key, client), now))
        if not wait and self.names.wait(key, now):  # a name under attack: slowed down
            wait = self._name_slot(key, now)
        if wait:
            return wait
        for table, k in ((self.clients, client), (self.pairs, (key, client)), (self.names, key)):
            table.add(k, now)
        return Ticket(key, client, now)

    def succeeded(self, ticket: Ticket) -> None:
        """The password was right: take the reservation back and forget the pair's failures."""
        self.pairs.clear((ticket.name, ticket.client))
        self.clients.take_back(ticket.client, ticket.at)
        self.names.take_back(ticket.name, ticket.at)

    def _name_slot(self, key: bytes, now: float) -> float:
        last = self._name_last.get(key)
        if last is not None and now - last < self.name_interval_secs:
            return self.name_interval_secs - (now - last)
        self._name_last[key] = now
        self._name_last.move_to_end(key)
        while len(self._name_last) > self.max_entries:
            self._name_last.popitem(last=False)
        return 0.0

    def sizes(self) -> dict[str, int]:
        """How many keys each table holds (bounded by ``max_entries``)."""
        return {
            "pairs": len(self.pairs),
            "clients": len(self.clients),
            "names": len(self.names),
            "name_slots": len(self._name_last),
        }
