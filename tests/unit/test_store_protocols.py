"""The narrow store protocols: both stores satisfy them, and no consumer steps outside its own.

Each consumer of the store (the pipeline, the delivery worker and operator actions, the study
assembler, the inference service and runner, ingest, the signal watcher, retention, the results
channel's report intake and the admin's reads) is typed with a small protocol from
``engine.store.protocols``. These tests keep that from rotting: every member of every protocol
exists on ``SQLiteStore`` and ``PostgresStore`` with a compatible signature, and an ast scan of
each consumer module finds no call on its store outside the protocol its annotation names.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

import engine.store.protocols as protocols
from engine.store.base import Store
from engine.store.postgres import PostgresStore
from engine.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
STORES = (SQLiteStore, PostgresStore)
PROTOCOLS = {
    name: obj
    for name, obj in vars(protocols).items()
    if inspect.isclass(obj)
    and getattr(obj, "_is_protocol", False)
    and obj.__module__ == protocols.__name__
}
# Each consumer module, and the protocols its store annotations must name (one each).
CONSUMERS = {
    "engine/flow/pipeline.py": {"Pipeline": "MessageQueue"},
    "engine/flow/delivery.py": {"DeliveryWorker": "DeliveryQueue", "operate": "DeliveryActions"},
    "engine/flow/assembly.py": {"StudyAssembler": "StudyAssembly"},
    "inference/service.py": {"InferenceService": "JobQueue"},
    "inference/runner.py": {"JobRunner": "JobWork"},
    "engine/flow/ingest.py": {"Ingest": "MessageIntake"},
    "engine/flow/signals.py": {"SignalWatcher": "SignalFeed"},
    "engine/flow/retention.py": {"Retention": "RetentionWork"},
    "engine/results/channel.py": {"ResultsIngest": "ReportIntake"},
    "engine/admin/views.py": {"StoreViews": "AdminReads"},
}


def members(proto: type) -> set[str]:
    """The public methods a protocol declares, its own and those of the protocols it extends."""
    return {
        name
        for cls in proto.__mro__
        if getattr(cls, "_is_protocol", False) and cls is not typing.Protocol
        for name, value in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


def hints(fn: Any) -> dict[str, Any]:
    """*fn*'s annotations resolved; names its module imports only for type checking are
    resolved from the protocols module (which imports every row type at run time)."""
    return typing.get_type_hints(fn, localns=vars(protocols))


def incompatibility(proto_fn: Any, store_fn: Any) -> str | None:
    """Why *store_fn* cannot stand where *proto_fn* is called, or None: every parameter of the
    protocol is there with the same kind, default and type; the store's extra ones have
    defaults; the return types are the same; both are coroutines or both are not."""
    if inspect.iscoroutinefunction(proto_fn) != inspect.iscoroutinefunction(store_fn):
        return "one is async, the other is not"
    want, have = inspect.signature(proto_fn).parameters, inspect.signature(store_fn).parameters
    want_t, have_t = hints(proto_fn), hints(store_fn)
    for name, p in want.items():
        q = have.get(name)
        if q is None:
            return f"no parameter {name!r}"
        if (p.kind, p.default) != (q.kind, q.default):
            return f"parameter {name!r} differs: {p} vs {q}"
        if name != "self" and want_t.get(name) != have_t.get(name):
            return f"parameter {name!r} has type {have_t.get(name)}, not {want_t.get(name)}"
    extra = [
        q
        for name, q in have.items()
        if name not in want
        and q.default is q.empty
        and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)
    ]
    if extra:
        return f"extra required parameters {[q.name for q in extra]}"
    if want_t.get("return") != have_t.get("return"):
        return f"returns {have_t.get('return')}, not {want_t.get('return')}"
    return None


def test_the_protocols_are_the_ones_the_consumers_name() -> None:
    named = {proto for uses in CONSUMERS.values() for proto in uses.values()}
    assert named == set(PROTOCOLS)


@pytest.mark.parametrize("store", STORES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("proto", sorted(PROTOCOLS))
def test_each_store_has_every_protocol_member_with_a_compatible_signature(
    store: type, proto: str
) -> None:
    problems = {}
    for name in sorted(members(PROTOCOLS[proto])):
        impl = getattr(store, name, None)
        if impl is None:
            problems[name] = "missing"
        elif (why := incompatibility(getattr(PROTOCOLS[proto], name), impl)) is not None:
            problems[name] = why
    assert not problems, f"{store.__name__} does not satisfy {proto}: {problems}"


def test_every_protocol_member_is_a_method_of_the_store_interface() -> None:
    outside = {p: sorted(members(cls) - set(dir(Store))) for p, cls in PROTOCOLS.items()}
    assert not any(outside.values()), outside


@pytest.mark.parametrize("store", STORES, ids=lambda c: c.__name__)
def test_every_public_store_method_says_what_it_raises(store: type) -> None:
    silent = [
        name
        for name in dir(store)
        if not name.startswith("_")
        and inspect.isroutine(getattr(store, name))
        and "raise" not in (inspect.getdoc(getattr(store, name)) or "").lower()
    ]
    assert not silent, f"{store.__name__}: no 'Raises ...' in the docstring of {silent}"


def test_the_job_queue_includes_what_the_runner_it_hands_its_store_to_needs() -> None:
    assert members(protocols.JobWork) <= members(protocols.JobQueue)


def test_a_store_method_with_another_signature_is_caught() -> None:
    class Other:
        async def fetch_received(self, channel: str, limit: int) -> list[Any]:
            return []

        async def apply_outcomes(self, outcomes: list[int]) -> list[Any]:
            return []

    assert "with_raw" in str(
        incompatibility(protocols.MessageQueue.fetch_received, Other.fetch_received)
    )
    assert "outcomes" in str(
        incompatibility(protocols.MessageQueue.apply_outcomes, Other.apply_outcomes)
    )


# -- each consumer calls only its protocol ----------------------------------------------------


def _annotation(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The annotation of *node*'s ``store`` parameter, as written (None: it has none)."""
    for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
        if arg.arg == "store":
            return ast.unparse(arg.annotation) if arg.annotation is not None else "<none>"
    return None


def _uses(tree: ast.AST, receiver: str) -> tuple[set[str], list[str]]:
    """Attributes read on *receiver* (``self.store`` or ``store``) within *tree*, and every
    other use of it (handing it on, aliasing it), as source text."""
    attrs, others = set(), []
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if ast.unparse(node) != receiver or not isinstance(node, ast.Attribute | ast.Name):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) and parent.value is node:
            attrs.add(parent.attr)
        else:
            others.append(ast.unparse(parent) if parent is not None else receiver)
    return attrs, others


def _consumer_scopes(tree: ast.Module) -> dict[str, tuple[str | None, set[str], list[str]]]:
    """Each class whose ``__init__`` takes a ``store``, and each module function that does:
    the annotation, the store attributes used in its body, and other uses of the store."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            init = next(
                (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None,
            )
            if init is not None and _annotation(init) is not None:
                found[node.name] = (_annotation(init), *_uses(node, "self.store"))
        elif (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and _annotation(node) is not None
        ):
            found[node.name] = (_annotation(node), *_uses(node, "store"))
    return found


@pytest.mark.parametrize("module", sorted(CONSUMERS))
def test_each_consumer_calls_nothing_on_its_store_outside_its_protocol(module: str) -> None:
    scopes = _consumer_scopes(ast.parse((ROOT / module).read_text()))
    assert set(scopes) == set(CONSUMERS[module]), "a consumer of the store was added or renamed"
    for scope, (annotation, attrs, others) in scopes.items():
        proto = CONSUMERS[module][scope]
        assert annotation == proto, f"{module} {scope} takes {annotation}, not {proto}"
        assert attrs, f"{module} {scope}: the scan found no store call (is it still looking?)"
        outside = attrs - members(PROTOCOLS[proto])
        assert not outside, f"{module} {scope} calls {sorted(outside)} outside {proto}"
        handed = [use for use in others if not use.startswith(("self.store: ", "self.store ="))]
        assert all(use.startswith("JobRunner(") for use in handed), (
            f"{module} {scope} hands its store on: {handed}"
        )
        needed = attrs | (members(protocols.JobWork) if handed else set())
        unused = members(PROTOCOLS[proto]) - needed
        assert not unused, f"{proto} lists {sorted(unused)}, which {scope} never calls"


def test_the_scan_sees_a_call_outside_the_protocol() -> None:
    source = (
        "class Pipeline:\n"
        "    def __init__(self, store: MessageQueue) -> None:\n"
        "        self.store = store\n"
        "    async def run(self) -> None:\n"
        "        await self.store.fetch_received('a', 1)\n"
        "        await self.store.prune_messages(0.0)\n"
    )
    annotation, attrs, _ = _consumer_scopes(ast.parse(source))["Pipeline"]
    assert annotation == "MessageQueue"
    assert attrs - members(protocols.MessageQueue) == {"prune_messages"}
