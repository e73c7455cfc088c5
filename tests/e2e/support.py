"""Shared by the admin API and dashboard tests: users and tokens per role, configs, seed data."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.admin.auth import hash_password
from engine.config.schema import lint_text
from engine.flow.runtime import Engine
from engine.store.clinical import InstanceMeta
from mappings.hl7v2.ack import read_ack

ROLES = ("admin", "analyst", "radiologist", "viewer", "ehr")
PASSWORDS = {role: f"{role}-long-test-password" for role in ROLES}
TOKENS = {role: f"rbt_test-token-for-the-{role}-role" for role in ROLES}
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@functools.cache
def _users_text() -> str:
    lines = []
    for role in ROLES:
        lines += ["[[user]]", f'name = "{role}"', f'role = "{role}"',
                  f'password = "{hash_password(PASSWORDS[role])}"', ""]
        digest = hashlib.sha256(TOKENS[role].encode()).hexdigest()
        lines += ["[[token]]", f'name = "{role}-token"', f'role = "{role}"',
                  f'sha256 = "{digest}"', ""]
    return "\n".join(lines)


def write_users_file(path: Path) -> Path:
    """One user (named after its role) and one API token per role (hashed once per run)."""
    path.write_text(_users_text(), encoding="utf-8")
    return path


@contextmanager
def admin_environment(users_file: Path) -> Iterator[None]:
    """RADBRIDGE_USERS_FILE set (and no admin password) for the duration."""
    saved = {k: os.environ.get(k) for k in ("RADBRIDGE_USERS_FILE", "RADBRIDGE_ADMIN_PASSWORD",
                                             "RADBRIDGE_ADMIN_PASSWORD_FILE")}
    os.environ["RADBRIDGE_USERS_FILE"] = str(users_file)
    os.environ.pop("RADBRIDGE_ADMIN_PASSWORD", None)
    os.environ.pop("RADBRIDGE_ADMIN_PASSWORD_FILE", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def config_text(tmp: Path, admin_extra: str = "", channels: str | None = None) -> str:
    """An engine with an orders channel forwarding to a file archive, a spare channel, and
    the admin API on a free loopback port."""
    default_channels = f"""
[[channel]]
name = "ris"
description = "orders from the RIS"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
accept = ["ORM^O01", "ADT^A01"]
process = "orders"
forward_to = ["archive"]

[[channel]]
name = "archive"
destination = {{ type = "file", directory = "{tmp / 'archive'}" }}

[[channel]]
name = "spare"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
"""
    return f"""
[store]
url = "sqlite:///{tmp / 'radbridge.db'}"
[engine]
data_dir = "{tmp / 'var'}"
[admin]
listen = "127.0.0.1:0"
stats_interval_secs = 0.3
{admin_extra}
{channels if channels is not None else default_channels}
"""


def make_engine(tmp: Path, text: str) -> Engine:
    path = tmp / "channels.toml"
    path.write_text(text, encoding="utf-8")
    config, problems = lint_text(text, str(path))
    assert not problems, "\n".join(map(str, problems))
    assert config is not None
    return Engine(config, config_path=str(path))


def edit_config(engine: Engine, change: Callable[[str], str]) -> str:
    """Rewrite the engine's channels.toml with *change*; return the text it had before."""
    path = Path(engine.config_path or "")
    before = path.read_text(encoding="utf-8")
    path.write_text(change(before), encoding="utf-8")
    return before


async def send_hl7(engine: Engine, payload: bytes, channel: str = "ris") -> str:
    host, port = engine.address(channel)
    client = MLLPClient(host, port, ack_timeout=10)
    try:
        return read_ack(await client.send(payload))[0]
    finally:
        await client.close()


async def add_study(engine: Engine, uid: str, accession: str | None, patient: str | None,
                    instances: int = 2) -> None:
    """Index a study's instances (as DICOM ingest would) without a DICOM peer."""
    for i in range(instances):
        meta = InstanceMeta(study_uid=uid, series_uid=f"{uid}.1", sop_uid=f"{uid}.1.{i}",
                            sop_class_uid=CT_SOP_CLASS, transfer_syntax=EXPLICIT_LE,
                            patient_id=patient, issuer="GENHOSP", accession=accession,
                            modality="CT", body_part="CHEST")
        await engine.store.add_instance("pacs", meta, f"/nonexistent/{uid}/{i}.dcm", 100, 30.0)


async def seed_case(engine: Engine) -> int:
    """An order (ORM over MLLP) met by its study: returns the new case id."""
    assert await send_hl7(engine, orm_o01("SEED1")) in ("AA", "CA")
    from tests.conftest import wait_for

    await wait_for(lambda: engine.store.list_orders(10))
    (order,) = await engine.store.list_orders(10)
    await add_study(engine, order.study_uid, order.accession, order.patient_id)
    cases = await engine.assembler.complete(order.study_uid)
    assert cases, "the study did not meet its order"
    return cases[0].id


class Api:
    """An HTTP client for the admin API: Bearer token per role, or a logged-in session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def call(self, method: str, path: str, role: str | None = None,
                   json: Any = None, headers: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if role is not None:
            hdrs["Authorization"] = f"Bearer {TOKENS[role]}"
        async with self.http.request(method, self.base + path, json=json, headers=hdrs) as r:
            ctype = r.headers.get("Content-Type", "")
            body = await r.json(content_type=None) if "json" in ctype else await r.text()
            return r.status, body

    async def close(self) -> None:
        await self.http.close()


def base_url(engine: Engine) -> str:
    host, port = engine.admin.address
    return f"http://{host}:{port}"


Started = Callable[..., Awaitable[tuple[Engine, Api]]]


@pytest_asyncio.fixture
async def admin_engine(tmp_path: Path) -> AsyncIterator[Started]:
    """Start engines with the admin API (users and tokens of ``ROLES``); stopped afterwards."""
    started: list[tuple[Engine, Api]] = []
    with admin_environment(write_users_file(tmp_path / "users.toml")):

        async def start(text: str | None = None) -> tuple[Engine, Api]:
            engine = make_engine(tmp_path, text or config_text(tmp_path))
            await engine.start()
            api = Api(base_url(engine))
            started.append((engine, api))
            return engine, api

        yield start
        for engine, api in started:
            await api.close()
            if engine.started:
                await engine.stop()


def chromium_or_fail() -> str:
    """The system Chromium; a missing browser fails the test (scripts/peers.sh installs it)."""
    path = Path("/usr/bin/chromium")
    if not path.exists():
        pytest.fail("Chromium is missing: run scripts/peers.sh (apt-get install chromium)")
    return str(path)
