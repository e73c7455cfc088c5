"""One ``RetryLater`` for every destination whose peer can say "busy, come back": its
``Retry-After`` read as delay-seconds and as an HTTP-date, against an injected clock;
garbage is ignored (the worker's backoff decides), never an error."""

from __future__ import annotations

import pytest

from engine.errors import (
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
    retry_after_secs,
)

# Wed, 21 Oct 2015 07:28:00 GMT, as seconds since the epoch.
NOW = 1445412480.0


def clock() -> float:
    return NOW


def test_retry_later_is_transient_and_never_permanent() -> None:
    err = RetryLater("HTTP 503: busy", 7.0)
    assert isinstance(err, TransientDeliveryError)
    assert not isinstance(err, PermanentDeliveryError)
    assert (err.retry_after, str(err)) == (7.0, "HTTP 503: busy")


def test_delay_seconds_are_read_as_seconds() -> None:
    assert retry_after_secs("120", clock) == 120.0
    assert retry_after_secs(" 0 ", clock) == 0.0


@pytest.mark.parametrize(
    "date",
    [
        "Wed, 21 Oct 2015 07:29:00 GMT",  # IMF-fixdate, the preferred form
        "Wednesday, 21-Oct-15 07:29:00 GMT",  # obsolete RFC 850
        "Wed Oct 21 07:29:00 2015",  # obsolete asctime: no zone, and HTTP dates are GMT
    ],
)
def test_an_http_date_one_minute_ahead_is_sixty_seconds_in_every_form(date: str) -> None:
    assert retry_after_secs(date, clock) == 60.0


def test_an_http_date_in_the_past_means_now() -> None:
    assert retry_after_secs("Wed, 21 Oct 2015 07:00:00 GMT", clock) == 0.0


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "١٢",
        "Wed, 99 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct",
    ],
)
def test_garbage_is_ignored_so_the_backoff_decides(garbage: str | None) -> None:
    assert retry_after_secs(garbage, clock) is None


def test_from_header_carries_the_delay_the_header_asks_for() -> None:
    err = RetryLater.from_header("HTTP 429: throttled", "Wed, 21 Oct 2015 07:28:30 GMT", clock)
    assert err.retry_after == 30.0
    assert RetryLater.from_header("HTTP 503", "whenever", clock).retry_after is None
