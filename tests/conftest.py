"""Shared fixtures: configs written to tmp, a running engine on port 0, real MLLP peers."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config.schema import Config, lint_text
from engine.flow.runtime import Engine
from tests.fixtures.peers import HL7Sink

REPO = Path(__file__).resolve().parent.parent


def make_config(text: str) -> Config:
    config, problems = lint_text(text, "test.toml")
    assert not problems, "\n".join(map(str, problems))
    assert config is not None
    return config


# The PostgreSQL the suite runs against (scripts/peers.sh starts it); missing, tests fail.
PG_URL = os.environ.get("RADBRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ("sqlite", "postgresql")


def pg_schema_url(schema: str) -> str:
    """A store URL whose connections work inside *schema* (a fresh one per test)."""
    return f"{PG_URL}?search_path={schema}"


async def _pg(*sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _pg_schemas() -> Iterator[list[str]]:
    """Schemas made by this session, dropped at its end: a test's engines (other fixtures)
    may still hold connections when its own fixtures are torn down."""
    schemas: list[str] = []
    yield schemas
    if schemas:
        asyncio.run(_pg("SET lock_timeout = '30s'",
                        *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in schemas)))


@pytest.fixture
def pg_url(_pg_schemas: list[str]) -> str:
    """A PostgreSQL store URL on a fresh, empty schema."""
    schema = f"rb_{secrets.token_hex(6)}"
    asyncio.run(_pg(f"CREATE SCHEMA {schema}"))
    _pg_schemas.append(schema)
    return pg_schema_url(schema)


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes a store URL runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radbridge.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Any]:
    """An opened store on ``db_url`` (SQLite, then PostgreSQL), closed after the test."""
    from engine.store.base import open_store

    s = open_store(db_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sink() -> AsyncIterator[HL7Sink]:
    """A real downstream MLLP listener (python-hl7's server) that records what it gets."""
    s = HL7Sink()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def engine_factory() -> AsyncIterator[Any]:
    engines: list[Engine] = []

    async def start(text: str) -> Engine:
        e = Engine(make_config(text))
        await e.start()
        engines.append(e)
        return e

    yield start
    for e in engines:
        if e.started:
            await e.stop()


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


class EngineProcess:
    """``radbridge run`` as a real process; ``addresses`` read from its ready lines."""

    def __init__(self, config: Path, env: dict[str, str],
                 preexec: Any = None) -> None:
        self.config, self.env, self.preexec = config, env, preexec
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: dict[str, tuple[str, int]] = {}

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", str(self.config), "--log-level",
             "WARNING"], stdout=subprocess.PIPE, text=True, env=self.env, cwd=REPO,
            preexec_fn=self.preexec)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("listening "):
                _, name, addr = line.split()
                host, _, port = addr.rpartition(":")
                self.addresses[name] = (host, int(port))
            if line.strip() == "READY":
                return
        raise RuntimeError(f"radbridge run exited with {self.proc.wait(timeout)}")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up (what a crash looks like)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(30)
            self._close_pipe()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(30)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def engine_process(cli_env: dict[str, str]) -> Iterator[Any]:
    procs: list[EngineProcess] = []

    def make(config: Path, preexec: Any = None) -> EngineProcess:
        p = EngineProcess(config, cli_env, preexec)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an (async or sync) predicate until it is true; fail with a clear message."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)

from tests.fixtures.orthanc import orthanc  # noqa: E402, F401  (fixture)
from tests.fixtures.triton import triton  # noqa: E402, F401  (fixture)
