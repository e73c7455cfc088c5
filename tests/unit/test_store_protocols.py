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
    named |= set(ROUTES.values()) | {p for uses in CLI.values() for p in uses.values()}
    assert named - {"Store"} == set(PROTOCOLS)


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


# -- the operator's side: admin route modules and CLI commands --------------------------------
# Each admin route module reaches the store through one accessor, ``_store``, typed with its
# desk; each CLI command that takes the store names its desk on the ``store`` parameter. A desk
# may serve several of them, and each of its methods is called by one at least. The whole
# ``Store`` only where the protocols module says so (``messages vacuum`` asks SQLite itself).
ROUTES = {
    "engine/admin/routes_channels.py": "MessageDesk",
    "engine/admin/routes_clinical.py": "ClinicalDesk",
    "engine/admin/routes_deliveries.py": "DeliveryActions",
    "engine/admin/routes_fhir.py": "FhirSearch",
    "engine/admin/routes_messages.py": "MessageDesk",
    "engine/admin/routes_models.py": "InferenceRecords",
    "engine/admin/routes_system.py": "MessageDesk",
    "engine/admin/routes_worklist.py": "WorklistDesk",
}
CLI = {
    "engine/cli/clinical.py": {
        name: "ClinicalDesk"
        for name in (
            "_list_cases",
            "_list_orders",
            "_studies",
            "_unmatched",
            "_worklist",
            "_agreement",
        )
    },
    "engine/cli/inference.py": {
        name: "InferenceRecords" for name in ("_audit", "_findings", "_jobs", "_models")
    },
    "engine/cli/deliveries.py": {"cmd_list.run": "DeliveryDesk", "cmd_act.run": "DeliveryActions"},
    "engine/cli/messages.py": {
        "cmd_list.run": "MessageDesk",
        "cmd_show.run": "MessageDesk",
        "cmd_reprocess.run": "MessageDesk",
        "cmd_prune.run": "RetentionWork",
        "cmd_vacuum.run": "Store",
    },
}
DESKS = (
    "MessageDesk",
    "ClinicalDesk",
    "WorklistDesk",
    "InferenceRecords",
    "FhirSearch",
    "DeliveryDesk",
)
# Handing the store on is allowed only to a function whose own protocol the desk includes.
HANDED = {"operate(": "DeliveryActions"}


def _handed_ok(proto: str, uses: list[str]) -> list[str]:
    """The uses in *uses* that hand the store to something *proto* does not cover."""
    return [
        use
        for use in uses
        if not any(
            use.startswith(call) and members(PROTOCOLS[need]) <= members(PROTOCOLS[proto])
            for call, need in HANDED.items()
        )
    ]


def _route_uses(tree: ast.Module) -> tuple[set[str], list[str]]:
    """Attributes read on ``_store(...)`` and on a ``store`` bound from it, and other uses of
    either (handing it on), outside the accessor."""
    attrs, others = set(), []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "_store":
            continue
        parents = {c: n for n in ast.walk(node) for c in ast.iter_child_nodes(n)}
        for sub in ast.walk(node):
            is_call = (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Name)
                and sub.func.id == "_store"
            )
            if not (is_call or (isinstance(sub, ast.Name) and sub.id == "store")):
                continue
            parent = parents.get(sub)
            if isinstance(parent, ast.Attribute) and parent.value is sub:
                attrs.add(parent.attr)
            elif not isinstance(parent, ast.Assign | ast.Tuple):
                others.append(ast.unparse(parent) if parent is not None else "")
    return attrs, others


def _store_attribute_reads(tree: ast.AST) -> list[str]:
    """Every ``<something>.store`` read, as source text."""
    return [
        ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"
    ]


def _route_calls(module: str) -> set[str]:
    return _route_uses(ast.parse((ROOT / module).read_text()))[0]


@pytest.mark.parametrize("module", sorted(ROUTES))
def test_each_admin_route_module_reaches_its_store_only_through_its_desk(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    accessor = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_store"]
    assert len(accessor) == 1, f"{module}: no single _store accessor"
    assert ast.unparse(accessor[0].returns) == ROUTES[module]  # type: ignore[arg-type]
    outside = [n for n in tree.body if n is not accessor[0]]
    reads = [r for n in outside for r in _store_attribute_reads(n)]
    assert not reads, f"{module} reaches the store around its accessor: {reads}"
    attrs, others = _route_uses(tree)
    assert attrs, f"{module}: the scan found no store call (is it still looking?)"
    outside_desk = attrs - members(PROTOCOLS[ROUTES[module]])
    assert not outside_desk, f"{module} calls {sorted(outside_desk)} outside {ROUTES[module]}"
    assert not _handed_ok(ROUTES[module], others), f"{module} hands its store on: {others}"


def _store_functions(tree: ast.AST) -> dict[str, tuple[str, set[str], list[str]]]:
    """Every function (nested ones as ``outer.inner``) with a ``store`` parameter: its
    annotation, the store attributes its body reads, and its other uses of the store."""
    found: dict[str, tuple[str, set[str], list[str]]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                annotation = _annotation(child)
                if annotation is not None:
                    found[prefix + child.name] = (annotation, *_uses(child, "store"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def _cli_calls(module: str) -> dict[str, set[str]]:
    found = _store_functions(ast.parse((ROOT / module).read_text()))
    return {name: attrs for name, (_, attrs, _) in found.items()}


def test_every_cli_module_that_takes_the_store_is_listed() -> None:
    taking = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "engine/cli").glob("*.py")
        if _store_functions(ast.parse(p.read_text()))
    }
    assert taking == set(CLI)


@pytest.mark.parametrize("module", sorted(CLI))
def test_each_cli_command_calls_nothing_on_its_store_outside_its_desk(module: str) -> None:
    found = _store_functions(ast.parse((ROOT / module).read_text()))
    assert set(found) == set(CLI[module]), "a command taking the store was added or renamed"
    for name, (annotation, attrs, others) in found.items():
        assert annotation == CLI[module][name], f"{module} {name} takes {annotation}"
        assert attrs or others, f"{module} {name}: the scan found no store use"
        if annotation == "Store":
            continue
        outside = attrs - members(PROTOCOLS[annotation])
        assert not outside, f"{module} {name} calls {sorted(outside)} outside {annotation}"
        assert not _handed_ok(annotation, others), f"{module} {name} hands its store on"


def test_every_desk_method_is_called_by_one_of_its_consumers_at_least() -> None:
    called: dict[str, set[str]] = {desk: set() for desk in DESKS}
    for module, desk in ROUTES.items():
        called.setdefault(desk, set()).update(_route_calls(module))
    for module, scopes in CLI.items():
        calls = _cli_calls(module)
        for name, desk in scopes.items():
            called.setdefault(desk, set()).update(calls[name])
    called["DeliveryDesk"] |= members(protocols.DeliveryActions)  # handed to ``operate``
    unused = {desk: sorted(members(PROTOCOLS[desk]) - called[desk]) for desk in DESKS}
    assert not any(unused.values()), unused


def test_the_route_scan_sees_a_call_around_the_desk() -> None:
    source = (
        "def _store(request: web.Request) -> FhirSearch:\n"
        "    return state(request).engine.store\n"
        "async def h(request: web.Request) -> None:\n"
        "    store = _store(request)\n"
        "    await store.search_fhir('Patient')\n"
        "    await _store(request).prune_messages(0.0)\n"
        "    await state(request).engine.store.reprocess([1])\n"
    )
    tree = ast.parse(source)
    attrs, _ = _route_uses(tree)
    assert attrs - members(protocols.FhirSearch) == {"prune_messages"}
    assert _store_attribute_reads(tree.body[1]) == ["state(request).engine.store"]
