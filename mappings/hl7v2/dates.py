"""Dates for the ``format_date`` step: HL7 DTM in and out, or any ``strftime`` format.

``DTM`` is HL7's ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``: read at any precision,
written at the precision it was read with (a ``strptime`` format's precision is its finest
directive: ``%d`` a day, ``%M`` a minute), with the offset when the value had one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

DTM = "DTM"
_DTM = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(?:\.(\d{1,4}))?([+-]\d{4})?")
_NESTED = re.compile(r"\d{4}(\d\d(\d\d(\d\d(\d\d(\d\d(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?")
# A strptime format's finest directive → the DTM digits it carries.
_PRECISION = (("%f", 14), ("%S", 14), ("%M", 12), ("%H", 10), ("%I", 10), ("%d", 8),
              ("%j", 8), ("%m", 6), ("%b", 6), ("%B", 6))
_SAMPLE = datetime(2001, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Stamp:
    """A point in time and how many DTM digits it was given with (4 to 14)."""

    when: datetime
    digits: int
    fraction: str = ""  # the DTM fraction as sent (kept: strftime has no 4-digit one)


def check_format(fmt: str) -> str | None:
    """Why *fmt* is not ``DTM`` or a usable ``strptime`` format (None: it is)."""
    if fmt == DTM:
        return None
    if "%" not in fmt:
        return f"{fmt!r} is neither DTM nor a strftime format (%Y%m%d ...)"
    try:
        datetime.strptime(_SAMPLE.strftime(fmt), fmt)
    except ValueError as exc:
        return f"{fmt!r} does not read back what it writes: {exc}"
    return None


def read(value: str, fmt: str) -> Stamp:
    """*value* read with *fmt*; raises ValueError (without quoting the value)."""
    if fmt != DTM:
        try:
            when = datetime.strptime(value, fmt)
        except ValueError:
            raise ValueError(f"the value does not match {fmt!r}") from None
        digits = next((n for d, n in _PRECISION if d in fmt), 4)
        return Stamp(when, digits)
    if not _NESTED.fullmatch(value):
        raise ValueError("the value is not an HL7 DTM (YYYYMMDDHHMMSS)")
    match = _DTM.fullmatch(value)
    assert match is not None  # the nested pattern admits only what this one reads
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz = None
    if offset:
        minutes = int(offset[1:3]) * 60 + int(offset[3:])
        tz = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
    try:
        when = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), int(second or 0), tzinfo=tz)
    except ValueError:
        raise ValueError("the value is not a real date or time") from None
    digits = 4 + 2 * sum(1 for part in (month, day, hour, minute, second) if part)
    return Stamp(when, digits, fraction or "")


def write(stamp: Stamp, fmt: str) -> str:
    """*stamp* written with *fmt* (``DTM``: at the precision it was read with)."""
    if fmt != DTM:
        return stamp.when.strftime(fmt)
    text = stamp.when.strftime("%Y%m%d%H%M%S")[: stamp.digits]
    if stamp.fraction and stamp.digits == 14:
        text += f".{stamp.fraction}"
    elif stamp.digits == 14 and stamp.when.microsecond:
        text += f".{stamp.when.microsecond // 100:04d}"
    offset = stamp.when.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        text += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text
