"""The import rules of docs/architecture.md, enforced so that the layering cannot rot.

``engine/`` knows no protocol: outside the composition root (the CLI entry points and the
plugin loader) no module under ``engine/`` imports ``channels``, ``mappings``, ``inference``,
``radbridge_fhir`` or a protocol library, at the top of a file or inside a function. The
few known exceptions are listed by name with the reason they remain; the list is a
ratchet: an exception that no longer occurs fails too, so it is deleted when its import is.

``mappings/`` is pure transforms: it imports no ``channels`` package (no sockets, no framing).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PACKAGES = frozenset({"channels", "mappings", "inference", "radbridge_fhir"})
PROTOCOL_LIBRARIES = frozenset({"pydicom", "pynetdicom", "hl7", "hl7apy", "fhir", "highdicom",
                                "dicomweb_client", "torch", "onnxruntime"})
FORBIDDEN_IN_ENGINE = PACKAGES | PROTOCOL_LIBRARIES

# The composition root: the only modules of engine/ that wire the packages in.
COMPOSITION_ROOT = ("engine/cli/*.py", "engine/plugins.py")

# (module, imported module) → why it is still allowed. Delete an entry with its import.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module a file imports (top level and inside functions), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def in_root(rel: str) -> bool:
    return any(Path(rel).match(pattern) for pattern in COMPOSITION_ROOT)


def engine_imports() -> list[tuple[str, int, str]]:
    """(module, line, imported) for every import of a forbidden package in engine/."""
    found = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, name in imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_ENGINE:
                found.append((rel, line, name))
    return found


def test_the_engine_imports_no_protocol_package_outside_the_composition_root() -> None:
    wrong = [f"{rel}:{line}: imports {name}" for rel, line, name in engine_imports()
             if not in_root(rel) and (rel, name) not in EXCEPTIONS]
    assert not wrong, "\n".join(wrong)


def test_every_listed_exception_still_occurs_so_the_list_only_shrinks() -> None:
    occurring = {(rel, name) for rel, _, name in engine_imports()}
    stale = [f"{rel} no longer imports {name}: delete its exception"
             for rel, name in EXCEPTIONS if (rel, name) not in occurring]
    assert not stale, "\n".join(stale)


def test_the_composition_root_exists_and_names_the_packages_it_wires() -> None:
    wired = {name.split(".")[0] for rel, _, name in engine_imports() if in_root(rel)}
    assert wired >= PACKAGES


def test_mappings_import_no_channel_package() -> None:
    wrong = [f"{path.relative_to(REPO)}:{line}: imports {name}"
             for path in sorted((REPO / "mappings").rglob("*.py"))
             for line, name in imports(path) if name.split(".")[0] == "channels"]
    assert not wrong, "\n".join(wrong)
