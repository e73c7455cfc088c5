"""Lookup tables: the code tables (``[[lookup]]``) that ``map`` steps translate values through.

A table comes from a CSV file with a header row (``file``, relative to the directory of
``channels.toml``; lines starting with ``#`` before the header are comments), from inline
``rows`` (tables of column = value) or, for one key and one value, from an inline ``table``
(``{ "CT1" = "RPID16" }``)::

    [[lookup]]
    name = "procedures"
    file = "lookups/procedures.csv"   # local,rpid,radlex_name
    key = "local"                     # or ["system", "code"]: one or more key columns
    value = "rpid"                    # the column a map step writes (a step may name another)
    on_missing = "keep"               # keep | default | error | filter (a step may override)
    default = ""                      # what on_missing = "default" writes

What a key with no row does (``on_missing``): ``keep`` leaves the field as it was,
``default`` writes ``default``, ``error`` ends the message ERROR naming the step and table,
``filter`` ends it FILTERED naming them.

Tables are read when the configuration is loaded (at start and on every reload) and kept on
the loaded :class:`~engine.config.schema.Config`: a file that is missing, unreadable, without
the named columns or with a key twice is a lint problem, so a reload that meets one changes
nothing, the running table stays, and the problem is reported to whoever reloaded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from engine.config.base import Strict

Loc = tuple[str | int, ...]
OnMissing = Literal["keep", "default", "error", "filter"]
MAX_TABLE_BYTES = 16 * 1024 * 1024  # a code table, not a data set: read whole at load


class LookupConfig(Strict):
    """One ``[[lookup]]`` table (see the module docstring)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="What map steps call it.")
    file: str | None = Field(None, description="A CSV file with a header row, relative to the "
                                               "directory of channels.toml.")
    rows: list[dict[str, str]] | None = Field(
        None, description='Inline rows instead of a file: [{ local = "CT1", rpid = "RPID16" }].')
    table: dict[str, str] | None = Field(
        None, description='Inline key → value pairs instead of a file: { "CT1" = "RPID16" }.')
    key: str | list[str] = Field("key", description="The key column, or several.")
    value: str = Field("value", description="The column a map step writes by default.")
    on_missing: OnMissing = Field("keep", description="A key with no row: keep the field, "
                                  "write default, ERROR or FILTERED (a map step may override).")
    default: str | None = Field(None, description='What on_missing = "default" writes.')

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)


class MissingKey(Exception):
    """A key the table has no row for, where its ``on_missing`` says error or filter."""

    def __init__(self, table: str, how: OnMissing) -> None:
        super().__init__(f"lookup {table} has no row for the key")
        self.how = how


@dataclass(frozen=True)
class LookupTable:
    """A loaded table: rows by key (a tuple of the key columns' values)."""

    name: str
    key: tuple[str, ...]
    value: str
    columns: tuple[str, ...] | None  # None: not read (lint without files)
    rows: Mapping[tuple[str, ...], Mapping[str, str]]
    on_missing: OnMissing = "keep"
    default: str = ""

    def find(self, key: tuple[str, ...], column: str | None = None,
             on_missing: OnMissing | None = None, default: str | None = None) -> str | None:
        """The *column* (default: the table's value) of *key*'s row; with no row, what
        *on_missing* (default: the table's) says: None to keep, the default, or MissingKey."""
        row = self.rows.get(key)
        if row is not None:
            return row.get(column or self.value, "")
        how = on_missing or self.on_missing
        if how == "keep":
            return None
        if how == "default":
            return self.default if default is None else default
        raise MissingKey(self.name, how)


def _rows_from_csv(text: str, loc: Loc) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):  # comment lines before the header
        lines.pop(0)
    reader = csv.DictReader(io.StringIO("".join(lines)))
    header = tuple((c or "").strip() for c in reader.fieldnames or ())
    if not header or any(not c for c in header):
        raise TableProblem(loc, "the CSV needs a header row naming every column")
    rows = []
    for row in reader:
        cells = list(row.values())
        rows.append({c: (v or "").strip() if isinstance(v, str) else "" for c, v in
                     zip(header, cells, strict=False)})
    return header, rows


class TableProblem(Exception):
    """Why a table cannot be loaded, with the key path that names it."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _read_file(spec: LookupConfig, base_dir: Path, loc: Loc) -> str:
    path = base_dir / str(spec.file)
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise TableProblem(loc, f"{path} is larger than {MAX_TABLE_BYTES} bytes")
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TableProblem(loc, f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TableProblem(loc, f"cannot read {path}: {exc}") from None


def _check_spec(spec: LookupConfig, loc: Loc) -> None:
    given = [k for k in ("file", "rows", "table") if getattr(spec, k) is not None]
    if len(given) != 1:
        raise TableProblem(loc, f"give exactly one of file, rows, table (found: "
                                f"{', '.join(given) or 'none'})")
    if spec.on_missing == "default" and spec.default is None:
        raise TableProblem(loc + ("on_missing",), '"default" needs default = "..."')


def load_table(spec: LookupConfig, base_dir: Path, loc: Loc, read_files: bool = True
               ) -> LookupTable:
    """The table *spec* names, read now; raise :class:`TableProblem`."""
    _check_spec(spec, loc)
    columns: tuple[str, ...] | None
    if spec.table is not None:
        columns, rows = (spec.keys[0], spec.value), [
            {spec.keys[0]: k, spec.value: v} for k, v in spec.table.items()]
        if len(spec.keys) != 1:
            raise TableProblem(loc + ("key",), "an inline table has one key column")
    elif spec.rows is not None:
        columns = tuple(dict.fromkeys(c for row in spec.rows for c in row))
        rows = spec.rows
    elif not read_files:
        return LookupTable(spec.name, spec.keys, spec.value, None, {}, spec.on_missing,
                           spec.default or "")
    else:
        columns, rows = _rows_from_csv(_read_file(spec, base_dir, loc + ("file",)), loc + ("file",))
    for key, name in [(("key",), c) for c in spec.keys] + [(("value",), spec.value)]:
        if name not in columns:
            raise TableProblem(loc + key, f"no column {name!r} in the table (columns: "
                                          f"{', '.join(columns)})")
    return LookupTable(spec.name, spec.keys, spec.value, columns, _index(spec, rows, loc),
                       spec.on_missing, spec.default or "")


def _index(spec: LookupConfig, rows: list[dict[str, str]], loc: Loc
           ) -> dict[tuple[str, ...], dict[str, str]]:
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for number, row in enumerate(rows, start=1):
        key = tuple(row.get(c, "") for c in spec.keys)
        if key in out:
            raise TableProblem(loc, f"row {number} repeats the key of an earlier row")
        out[key] = row
    return out


def check_lookups(doc: dict[str, Any], base_dir: Path, read_files: bool
                  ) -> tuple[dict[str, LookupTable], list[tuple[Loc, str]]]:
    """Every ``[[lookup]]`` of *doc* loaded (by name), and the problems of those that are not.

    Shape problems (unknown keys, a missing ``value``) are left to the typed model; a table
    whose shape is wrong is simply not loaded.
    """
    raw = doc.get("lookup", [])
    tables: dict[str, LookupTable] = {}
    problems: list[tuple[Loc, str]] = []
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        loc: Loc = ("lookup", i)
        try:
            spec = LookupConfig.model_validate(entry)
        except ValidationError:
            continue
        if spec.name in tables:
            problems.append((loc + ("name",), f"a lookup called {spec.name!r} comes earlier"))
            continue
        try:
            tables[spec.name] = load_table(spec, base_dir, loc, read_files)
        except TableProblem as exc:
            problems.append((exc.loc, exc.message))
            # known by name, columns unknown: its steps are checked without a second report
            tables[spec.name] = LookupTable(spec.name, spec.keys, spec.value, None, {})
    return tables, problems
