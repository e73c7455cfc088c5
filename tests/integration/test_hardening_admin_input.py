"""Admin API and CLI input: bad values get a 4xx or a one-line error, never a 5xx or a trace.

Also the FHIR read API's search criteria and absolute URLs, and the agreement figure of
``/api/models``. The JSON bodies and query parameters fuzzed here come from the router
(``engine.admin.routing.operations``) and the CLI's options from its parser
(``engine.cli.commands.build_parser``): a new endpoint, body key or option is covered when added.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from engine.admin.routes_fhir import TYPES
from engine.admin.routing import Operation, operations
from engine.cli.commands import build_parser
from engine.config.schema import lint_text
from engine.store.inference import ModelLoad
from engine.store.results import FeedbackEntry
from tests.conftest import REPO
from tests.e2e.support import (
    Api,
    Started,
    admin_engine,
    admin_environment,
    base_url,
    config_text,
    make_engine,
    seed_case,
    write_users_file,
)

__all__ = ["admin_engine"]
PUBLIC_URL = "https://radbridge.example.org/"
EVIL_HOST = "evil.example:6666"


class Env:
    def __init__(self, engine: Any, api: Api, case_id: int, study_uid: str) -> None:
        self.engine, self.api, self.case_id, self.study_uid = engine, api, case_id, study_uid


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("admin-input")
    with admin_environment(write_users_file(tmp / "users.toml")):
        engine = make_engine(tmp, config_text(tmp))
        await engine.start()
        api = Api(base_url(engine))
        try:
            case_id = await seed_case(engine)
            (case,) = await engine.store.list_cases(limit=1)
            await _fhir_resource(engine, case_id)
            yield Env(engine, api, case_id, case.study_uid)
        finally:
            await api.close()
            await engine.stop()


async def _fhir_resource(engine: Any, case_id: int) -> str:
    from radbridge_fhir.ids import resource_id, storable

    obs = {
        "resourceType": "Observation",
        "status": "preliminary",
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": "urn:radbridge:test", "value": "o1"}],
    }
    await engine.store.save_fhir_resources(case_id, storable([obs]))
    return resource_id(obs)


# -- FHIR: criteria and absolute URLs -------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("rtype", sorted(TYPES))
@pytest.mark.parametrize("query", ["", "?_count=5", "?_format=json"])
async def test_a_fhir_search_without_a_criterion_is_refused_with_an_operation_outcome(
    env: Env, rtype: str, query: str
) -> None:
    status, body = await env.api.call("GET", f"/fhir/{rtype}{query}", "ehr")
    assert status == 400 and body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert issue["code"] == "required" and "at least one criterion" in issue["diagnostics"]
    assert "_id" in issue["diagnostics"] and "identifier" in issue["diagnostics"]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_fhir_search_with_a_criterion_still_answers_a_bundle(env: Env) -> None:
    status, body = await env.api.call("GET", "/fhir/Observation?patient=p1", "ehr")
    assert status == 200 and body["type"] == "searchset" and len(body["entry"]) == 1


async def _urls(api: Api, host: str) -> list[str]:
    headers = {"Host": host, "X-Forwarded-Host": host, "Forwarded": f"host={host}"}
    _, bundle = await api.call("GET", "/fhir/Observation?patient=p1", "ehr", headers=headers)
    _, meta = await api.call("GET", "/fhir/metadata", "ehr", headers=headers)
    return (
        [e["fullUrl"] for e in bundle["entry"]]
        + [link["url"] for link in bundle["link"]]
        + [meta["implementation"]["url"]]
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_without_public_url_absolute_urls_use_the_listener_not_the_host_header(
    env: Env,
) -> None:
    urls = await _urls(env.api, EVIL_HOST)
    assert len(urls) == 3
    assert all(u.startswith(f"{base_url(env.engine)}/fhir") for u in urls), urls
    assert urls[1].endswith("/fhir/Observation?patient=p1")


async def test_absolute_urls_start_with_the_configured_public_url(
    admin_engine: Started, tmp_path: Any
) -> None:
    engine, api = await admin_engine(config_text(tmp_path, f'public_url = "{PUBLIC_URL}"'))
    await _fhir_resource(engine, await seed_case(engine))
    urls = await _urls(api, EVIL_HOST)
    assert len(urls) == 3
    assert all(u.startswith("https://radbridge.example.org/fhir") for u in urls), urls
    assert not any("evil" in u for u in urls)


@pytest.mark.parametrize(
    "value,reason",
    [
        ("ftp://radbridge.example.org", "absolute http"),
        ("radbridge.example.org", "absolute http"),
        ("https://radbridge.example.org/?a=1", "query"),
        ("https://u:p@radbridge.example.org", "cred"),
        ("https://radbridge.example.org:99999", "port"),
    ],
)
def test_lint_refuses_a_public_url_that_is_not_an_absolute_http_url(
    value: str, reason: str
) -> None:
    text = f'[admin]\nlisten = "127.0.0.1:0"\npublic_url = "{value}"\n'
    config, problems = lint_text(text, "channels.toml")
    assert config is None and problems
    # A URL with credentials is also refused by the secrets rule: every problem names this key.
    assert all(str(p).startswith("channels.toml:3: admin.public_url: ") for p in problems)
    assert any(reason in str(p) for p in problems)


# -- /api/models: agreement from stored feedback --------------------------------------------


async def test_models_report_the_current_versions_agreement_from_stored_feedback(
    admin_engine: Started,
) -> None:
    engine, api = await admin_engine()
    case_id = await seed_case(engine)
    await engine.store.record_model_load(
        ModelLoad("cxr-agree", "2.0", "builtin", "abc", "cpu", "loaded", at=time.time())
    )

    def entry(version: str, verdict: str, code: str) -> FeedbackEntry:
        return FeedbackEntry(
            case_id,
            "cxr-agree",
            version,
            code,
            verdict,
            "radiologist",
            "999" if verdict == "modify" else None,
            "radiologist",
            None,
            time.time(),
        )

    await engine.store.record_feedback(
        [entry("2.0", "accept", c) for c in ("1", "2", "3")]
        + [entry("2.0", "modify", "4")]
        + [entry("1.0", "reject", c) for c in ("1", "2", "3", "4", "5")]
    )
    status, body = await api.call("GET", "/api/models", "viewer")
    assert status == 200
    (model,) = [m for m in body["models"] if m["name"] == "cxr-agree"]
    assert (model["version"], model["agreement"], model["judged"]) == ("2.0", 0.75, 4)
    _, per_version = await api.call("GET", "/api/agreement", "analyst")
    assert {(r["version"], r["agreement"]) for r in per_version["agreement"]} == {
        ("2.0", 0.75),
        ("1.0", 0.0),
    }


# -- every JSON body and query parameter, fuzzed -------------------------------------------

WRONG: dict[str, list[Any]] = {
    "integer": ["abc", 1.5, True, None, [], {}, -1, 2**70],
    "number": ["abc", True, None, [], {}],
    "string": [5, True, None, [], {}],
    "boolean": ["abc", 1, None, [], {}],
    "array": ["abc", 5, {}, ["x"], [None], [True]],
    "object": ["abc", 5, [], {"no_such_key": 1}],
}
NOT_AN_OBJECT: list[Any] = [[], "x", 5, None, True, [{"ids": [1]}]]


def _kinds(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", "object")
    return [kind] if isinstance(kind, str) else list(kind)


_PY = {
    "integer": int,
    "number": (int, float),
    "string": str,
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _fits(value: Any, kinds: list[str]) -> bool:
    """Whether *value* has one of the JSON types (a bool is only a boolean)."""
    if isinstance(value, bool):
        return "boolean" in kinds
    return any(isinstance(value, _PY[k]) for k in kinds)  # type: ignore[arg-type]


def wrong_bodies(
    schema: dict[str, Any], table: dict[str, list[Any]] = WRONG, depth: int = 0
) -> Iterator[Any]:
    """For each key of the schema, an object with each value of *table* for its type there
    (keys of nested objects too)."""
    for name, sub in schema.get("properties", {}).items():
        kinds = _kinds(sub)
        for kind in kinds:
            for bad in table.get(kind, []):
                if table is LONG or not _fits(bad, kinds):
                    yield {name: bad}
        if "object" in _kinds(sub) and depth < 2:
            for inner in wrong_bodies(sub, table, depth + 1):
                yield {name: inner}


LONG = {"string": ["x" * 100_000, "\x00\ud7ff"]}  # schema-valid maybe, never a 5xx


POSTS = sorted((op for op in operations() if op.method == "POST"), key=lambda o: o.operation_id)


def _path(env: Env, op: Operation) -> str:
    fills = {
        "name": "spare",
        "uid": env.study_uid,
        "case_id": str(env.case_id),
        "id": str(env.case_id),
        "type": "Observation",
    }
    path = op.path
    for p in op.params:
        if p.where == "path":
            assert p.name in fills, f"{op.operation_id}: add a value for {p.name}"
            path = path.replace("{" + p.name + "}", fills[p.name])
    return path


def test_the_reprocess_body_is_among_those_fuzzed() -> None:
    ids = {op.operation_id for op in POSTS if op.body}
    assert {"reprocess_messages", "reload_config", "mark_read", "post_feedback"} <= ids


@pytest.mark.asyncio(loop_scope="module")
async def test_reprocess_with_a_limit_that_is_not_a_number_is_a_400_naming_the_key(
    env: Env,
) -> None:
    status, body = await env.api.call(
        "POST", "/api/messages/reprocess", "admin", json={"filter": {"limit": "abc"}}
    )
    assert status == 400 and body["error"] == "filter.limit must be an integer"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "op",
    [op for op in POSTS if op.operation_id != "login"],
    ids=[op.operation_id for op in POSTS if op.operation_id != "login"],
)
async def test_wrong_types_in_any_json_body_get_a_4xx_with_a_message(
    env: Env, op: Operation
) -> None:
    path = _path(env, op)
    bodies = [*NOT_AN_OBJECT, *wrong_bodies(op.body or {})]
    for body in bodies:
        status, answer = await env.api.call("POST", path, "admin", json=body)
        assert status < 500, f"POST {path} {str(body)[:80]}: {status} {answer}"
        if op.body and body not in ({}, None):
            assert 400 <= status < 500 and answer["error"], f"POST {path} {str(body)[:80]}"
    for body in wrong_bodies(op.body or {}, LONG):
        status, answer = await env.api.call("POST", path, "admin", json=body)
        assert status < 500, f"POST {path} {str(body)[:80]}: {status} {answer}"
    async with env.api.http.post(
        env.api.base + path,
        data=b"{not json",
        headers={"Authorization": "Bearer rbt_test-token-for-the-admin-role"},
    ) as r:
        assert r.status < 500


@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_types_in_the_login_body_get_a_4xx(env: Env) -> None:
    login = next(op for op in POSTS if op.operation_id == "login")
    for body in [*NOT_AN_OBJECT, *wrong_bodies(login.body or {})]:
        status, answer = await env.api.call("POST", "/api/login", None, json=body)
        assert 400 <= status < 500 and answer["error"], body


BAD_QUERY_VALUES = ("abc", "-1", "nan", "inf", "1e999", "9" * 40, "2026-13-45", "\x00")
GETS = sorted((op for op in operations() if op.method == "GET"), key=lambda o: o.operation_id)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("op", GETS, ids=[op.operation_id for op in GETS])
async def test_bad_query_and_path_values_of_any_get_are_never_a_5xx(
    env: Env, op: Operation
) -> None:
    path = _path(env, op)
    queries = [f"{p.name}={v}" for p in op.params if p.where == "query" for v in BAD_QUERY_VALUES]
    for q in queries or [""]:
        status, answer = await env.api.call("GET", f"{path}?{q}", "admin")
        assert status < 500, f"GET {path}?{q}: {status} {answer}"
    for p in (p for p in op.params if p.where == "path" and p.name not in ("type", "name")):
        for v in ("abc", "-1", "9" * 40):
            bad = op.path.replace("{" + p.name + "}", v).replace("{type}", "Observation")
            status, answer = await env.api.call("GET", bad, "admin")
            assert status < 500, f"GET {bad}: {status} {answer}"


async def test_huge_ids_in_paths_are_refused_before_the_store(admin_engine: Started) -> None:
    _, api = await admin_engine()
    for path in (
        "/api/cases/99999999999999999999",
        "/api/messages/99999999999999999999",
        "/api/cases/99999999999999999999/feedback",
    ):
        status, body = await api.call("GET", path, "admin")
        assert status == 400 and "must be between" in body["error"], (path, body)
    status, _ = await api.call("GET", "/api/unmatched?older_than_secs=nan", "admin")
    assert status == 400


# -- the CLI: every option that parses a value ----------------------------------------------


def _value_actions(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _value_actions(sub, (*path, name))
        elif action.type is not None:
            yield path, action


VALUE_ACTIONS = [
    (p, a)
    for p, a in _value_actions(build_parser())
    if getattr(a.type, "__name__", "") in ("integer", "number", "iso_time")
]


def test_no_option_parses_with_a_bare_int_or_float() -> None:
    """A bare ``type=int`` answers 'invalid int value' and takes nan, -1 and 10**30."""
    bare = [
        (" ".join(p), a.dest) for p, a in _value_actions(build_parser()) if a.type in (int, float)
    ]
    assert not bare
    assert len(VALUE_ACTIONS) >= 12


def _argv(path: tuple[str, ...], action: argparse.Action, value: str) -> list[str]:
    if action.option_strings:
        return [*path, action.option_strings[0], value]
    return [*path, value]


@pytest.mark.parametrize(
    "path,action",
    VALUE_ACTIONS,
    ids=[
        f"{' '.join(p)} {a.option_strings[0] if a.option_strings else a.dest}"
        for p, a in VALUE_ACTIONS
    ],
)
def test_a_bad_value_for_any_cli_option_is_a_one_line_error_with_exit_code_2(
    path: tuple[str, ...], action: argparse.Action, cli_env: dict[str, str]
) -> None:
    for value in ("bad", "nan"):
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli", *_argv(path, action, value)],
            capture_output=True,
            text=True,
            env=cli_env,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        name = action.option_strings[0] if action.option_strings else action.dest
        assert lines[0].startswith(f"radbridge {' '.join(path)}: error: argument ")
        assert name in lines[0] and repr(value) in lines[0]


def test_messages_list_since_bad_names_what_it_takes(cli_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "messages", "list", "--since", "bad"],
        capture_output=True,
        text=True,
        env=cli_env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "radbridge messages list: error: argument --since: 'bad' is not an "
        "ISO date/datetime (2026-11-30, 2026-11-30T08:00) or epoch seconds "
        "(see radbridge messages list --help)\n"
    )
