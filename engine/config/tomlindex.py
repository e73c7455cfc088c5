"""A key -> line index for TOML documents.

``tomllib`` keeps no positions, so lint messages could not name a line. This
scanner walks the text once and records the line of every table header, key
and inline-table key as a path tuple, e.g. ``("channel", 0, "source", "listen")``.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_BARE_KEY = re.compile(rf'\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=')
_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _split_key(key: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+', key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.index: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}

    def run(self) -> dict[Path, int]:
        current: Path = ()
        while self.pos < len(self.text):
            eol = self.text.find("\n", self.pos)
            eol = len(self.text) if eol < 0 else eol
            line_text = self.text[self.pos:eol]
            header = _HEADER.match(line_text)
            key = _BARE_KEY.match(line_text)
            if header and not key:
                current = self._header(header.group(1), header.group(2))
                self._advance_to(eol)
            elif key:
                path = (*current, *_split_key(key.group(1)))
                self.index[path] = self.line
                self._advance_to(self.pos + key.end())
                self._value(path)
                self._skip_to_eol()
            else:
                self._advance_to(eol)
            if self.pos < len(self.text):
                self._advance_to(self.pos + 1)
        return self.index

    def _header(self, brackets: str, name: str) -> Path:
        path: Path = tuple(_split_key(name))
        if brackets == "[[":
            resolved = (*self._resolve(path[:-1]), path[-1])
            n = self.arrays.get(resolved, 0)
            self.arrays[resolved] = n + 1
            resolved = (*resolved, n)
        else:
            resolved = self._resolve(path)
        self.index[resolved] = self.line
        return resolved

    def _resolve(self, path: Path) -> Path:
        """Map a dotted header onto array tables: [[channel]] then [channel.x] -> channel/N/x."""
        out: Path = ()
        for part in path:
            out = (*out, part)
            if out in self.arrays:
                out = (*out, self.arrays[out] - 1)
        return out

    def _advance_to(self, new_pos: int) -> None:
        self.line += self.text.count("\n", self.pos, new_pos)
        self.pos = new_pos

    def _skip_to_eol(self) -> None:
        eol = self.text.find("\n", self.pos)
        self._advance_to(len(self.text) if eol < 0 else eol)

    def _value(self, path: Path) -> None:
        self._skip_space()
        ch = self.text[self.pos:self.pos + 1]
        if ch == "{":
            self._advance_to(self.pos + 1)
            self._inline_table(path)
        elif ch == "[":
            self._advance_to(self.pos + 1)
            self._array(path)
        elif ch in ("'", '"'):
            self._string()
        else:
            m = re.compile(r"[^,\]\}\n#]*").match(self.text, self.pos)
            self._advance_to(m.end() if m else self.pos)

    def _skip_space(self) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r\n,":
                self._advance_to(self.pos + 1)
            elif ch == "#":
                self._skip_to_eol()
            else:
                return

    def _string(self) -> None:
        q = self.text[self.pos]
        triple = self.text.startswith(q * 3, self.pos)
        end_tok = q * 3 if triple else q
        i = self.pos + len(end_tok)
        while i < len(self.text):
            if q == '"' and self.text[i] == "\\":
                i += 2
                continue
            if self.text.startswith(end_tok, i):
                self._advance_to(i + len(end_tok))
                return
            i += 1
        self._advance_to(len(self.text))

    def _inline_table(self, path: Path) -> None:
        while self.pos < len(self.text):
            self._skip_space()
            if self.text[self.pos:self.pos + 1] == "}":
                self._advance_to(self.pos + 1)
                return
            key = _BARE_KEY.match(self.text, self.pos)
            if not key:
                self._advance_to(self.pos + 1)
                continue
            sub = (*path, *_split_key(key.group(1)))
            self._advance_to(key.end())
            self.index[sub] = self.line
            self._value(sub)

    def _array(self, path: Path) -> None:
        n = 0
        while self.pos < len(self.text):
            self._skip_space()
            if self.text[self.pos:self.pos + 1] == "]":
                self._advance_to(self.pos + 1)
                return
            self.index[(*path, n)] = self.line
            start = self.pos
            self._value((*path, n))
            n += 1
            if self.pos == start:
                self._advance_to(self.pos + 1)


def index_lines(text: str) -> dict[Path, int]:
    """Return the line (1-based) of every key, table and array element in *text*."""
    return _Scanner(text).run()


def line_for(index: dict[Path, int], loc: Path) -> tuple[int, Path]:
    """The line for a (possibly partly unknown) path: its longest known prefix.

    Elements not in the document (pydantic's union tags, a missing key) are
    skipped; the returned path is the part that was found.
    """
    found: Path = ()
    for part in loc:
        candidate = (*found, part)
        if any(key[:len(candidate)] == candidate for key in index):
            found = candidate
    while found and found not in index:
        found = found[:-1]
    return (index.get(found, 1) if found else 1), found
