"""Pipeline work in worker processes (issue 15): the event loop's interpreter never maps.

Real worker processes, real stores, real MLLP senders. A worker killed mid-batch loses
nothing: what it held runs again, and a message that kills its worker every time ends ERROR
naming why while the others go on. A message over the size limits ends ERROR with the count
and the limit, never parsed, while other senders' messages are processed. No timing is
asserted here (``bench.e2e --hostile`` measures the ACKs beside a hostile message).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from bench.hl7gen import adt_a01, orm_o01
from channels.mllp.client import MLLPClient
from engine.flow import workers
from engine.flow.pipeline import Pipeline
from engine.flow.workers import Recipe, build_channel_processor, channel_recipe
from engine.store.base import FINAL_STATUSES, NewMessage, open_store
from mappings.hl7v2.ack import read_ack
from tests.conftest import REPO, make_config, wait_for
from tests.fixtures.crashing import CrashingProcessor, crashing_processor
from tests.unit.test_config_lint import _readme_toml_blocks

README = (REPO / "README.md").read_text(encoding="utf-8")


def orders(db_url: str, engine: str = "", extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
{engine}
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0", max_message_bytes = 16777216 }}
process = "orders"
{extra}
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def send(address: tuple[str, int], frames: list[bytes]) -> list[str]:
    """Each frame's answer: "AA" when accepted (original or enhanced mode), else MSA-1."""
    client = MLLPClient(*address, ack_timeout=120)
    try:
        codes = [read_ack(await client.send(frame))[0] for frame in frames]
        return ["AA" if code in ("AA", "CA") else code for code in codes]
    finally:
        await client.close()


async def statuses(store: Any, ids: range) -> dict[int, tuple[str, str | None]]:
    out = {}
    for mid in ids:
        got = await store.get_message(mid)
        assert got is not None, mid
        out[mid] = (str(got[0].status), got[0].error)
    return out


async def all_final(store: Any, n: int) -> bool:
    return all(s in FINAL_STATUSES for s, _ in (await statuses(store, range(1, n + 1))).values())


# -- crashes -----------------------------------------------------------------------------------

async def test_a_message_that_kills_its_worker_ends_error_and_every_other_one_is_processed(
        db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    await store.open()
    raws = [b"MSG %d" % i for i in range(40)]
    raws[7], raws[21] = b"MSG 7 POISON", b"MSG 21 ONCE"
    for i, raw in enumerate(raws):
        await store.insert_message(NewMessage("ris", float(i), raw, key=f"P{i % 4}"))
    recipe = Recipe(crashing_processor, (str(tmp_path),), "crashing")
    pool = workers.acquire(1)
    pipeline = Pipeline("ris", store, CrashingProcessor(str(tmp_path)), lambda: None,
                        pool=pool, recipe=recipe)
    task = asyncio.create_task(pipeline.run())
    try:
        await wait_for(lambda: all_final(store, len(raws)), timeout=120)
        final = await statuses(store, range(1, len(raws) + 1))
        assert final.pop(8) == ("ERROR", "poison: the worker process died 3 times processing it")
        assert set(final.values()) == {("TRANSFORMED", None)}  # the crashed-once one included
        layer = (await store.get_message(22))[0].layers["worker"]  # type: ignore[index]
        assert int(layer) != os.getpid()
        assert pool.restarts >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await workers.release(pool)
        await store.close()
    assert not [pid for pid in pool.pids if alive(pid)]  # none left behind


# -- the engine's pipelines --------------------------------------------------------------------

async def test_orders_are_mapped_in_worker_processes_and_none_are_left_after_stop(
        db_url: str, engine_factory: Any) -> None:
    engine = await engine_factory(orders(db_url, "pipeline_workers = 1"))
    frames = [adt_a01(f"A{i}", patient_id=f"MRN{i}") for i in range(5)]
    frames += [orm_o01(f"O{i}", patient_id=f"MRN{i}", accession=f"ACC{i}") for i in range(5)]
    assert await send(engine.address("ris"), frames) == ["AA"] * 10
    await wait_for(lambda: all_final(engine.store, 10), timeout=60)
    assert set((await statuses(engine.store, range(1, 11))).values()) == {("TRANSFORMED", None)}
    accessions = {o.accession for o in await engine.store.list_orders()}
    assert accessions == {f"ACC{i}" for i in range(5)}  # the domain events came back
    pool = engine.pool
    assert pool is not None and pool.pids and os.getpid() not in pool.pids
    await engine.stop()
    assert not [pid for pid in pool.pids if alive(pid)]


async def test_a_worker_killed_while_idle_is_replaced_and_the_next_messages_are_processed(
        tmp_path: Path, engine_factory: Any) -> None:
    engine = await engine_factory(orders(f"sqlite:///{tmp_path / 'rb.db'}",
                                         "pipeline_workers = 1"))
    assert await send(engine.address("ris"), [orm_o01("O1")]) == ["AA"]
    await wait_for(lambda: all_final(engine.store, 1), timeout=60)
    first = set(engine.pool.pids)
    for pid in first:
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would, between two batches
    await wait_for(lambda: not any(alive(pid) for pid in first), timeout=60)
    assert await send(engine.address("ris"), [orm_o01("O2"), adt_a01("A3")]) == ["AA"] * 2
    await wait_for(lambda: all_final(engine.store, 3), timeout=60)
    assert set((await statuses(engine.store, range(1, 4))).values()) == {("TRANSFORMED", None)}
    assert engine.pool.restarts == 1 and engine.pool.pids - first


async def test_a_reload_builds_the_changed_channel_again_in_the_workers(
        tmp_path: Path, engine_factory: Any) -> None:
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    engine = await engine_factory(orders(url, "pipeline_workers = 1"))
    assert await send(engine.address("ris"), [orm_o01("O1")]) == ["AA"]
    await wait_for(lambda: all_final(engine.store, 1), timeout=60)
    adt_only = 'filter = { name = "only-adt", field = "MSH-9.1", eq = "ADT" }'
    await engine.controls.reload(make_config(orders(url, "pipeline_workers = 1", adt_only)))
    assert await send(engine.address("ris"), [orm_o01("O2"), adt_a01("A3")]) == ["AA"] * 2
    await wait_for(lambda: all_final(engine.store, 3), timeout=60)
    assert await statuses(engine.store, range(1, 4)) == {
        1: ("TRANSFORMED", None), 2: ("FILTERED", "filtered by only-adt"),
        3: ("TRANSFORMED", None)}


# -- bounded cost ------------------------------------------------------------------------------

def huge(control_id: str, segments: int) -> bytes:
    """An ORM^O01 followed by *segments* NTE lines (400,000: about 10 MB)."""
    return orm_o01(control_id) + b"".join(b"\rNTE|%d||line of text" % i
                                          for i in range(segments))


async def test_a_message_of_400000_segments_ends_error_naming_the_limit_and_others_flow(
        db_url: str, engine_factory: Any) -> None:
    engine = await engine_factory(orders(db_url, "pipeline_workers = 1"))
    addr = engine.address("ris")
    normal = [[orm_o01(f"N{c}-{i}", patient_id=f"MRN{c}") for i in range(20)] for c in range(3)]
    acks = await asyncio.gather(send(addr, [huge("HUGE", 400_000)]),
                                *(send(addr, frames) for frames in normal))
    assert acks == [["AA"]] + [["AA"] * 20] * 3
    await wait_for(lambda: all_final(engine.store, 61), timeout=120)
    final = await statuses(engine.store, range(1, 62))
    errors = {mid: err for mid, (status, err) in final.items() if status == "ERROR"}
    assert len(errors) == 1 and re.fullmatch(
        r"too large to process: 400,00\d segments \(\[engine\] max_segments = 50,000\)",
        next(iter(errors.values())) or "")
    assert sum(s == "TRANSFORMED" for s, _ in final.values()) == 60


@pytest.mark.parametrize("workers_setting", ["pipeline_workers = 0", "pipeline_workers = 1"])
async def test_the_limits_come_from_the_engine_section_in_threads_and_in_workers(
        workers_setting: str, tmp_path: Path, engine_factory: Any) -> None:
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    engine = await engine_factory(orders(url, f"{workers_setting}\nmax_segments = 30\n"
                                              "max_fields = 400"))
    frames = [orm_o01("SMALL"), huge("SEGS", 30), orm_o01("FIELDS") + b"\rZFL" + b"|x" * 400]
    assert await send(engine.address("ris"), frames) == ["AA"] * 3
    await wait_for(lambda: all_final(engine.store, 3), timeout=60)
    segments, fields = frames[1].count(b"\r") + 1, frames[2].count(b"|")
    assert segments > 30 and frames[2].count(b"\r") < 30 and fields > 400
    assert await statuses(engine.store, range(1, 4)) == {
        1: ("TRANSFORMED", None),
        2: ("ERROR", f"too large to process: {segments} segments ([engine] max_segments = 30)"),
        3: ("ERROR", f"too large to process: {fields} fields ([engine] max_fields = 400)")}
    assert (engine.pool is None) == workers_setting.endswith("0")


# -- the snapshot a worker builds from ---------------------------------------------------------

@pytest.mark.parametrize("text", [(REPO / "channels.toml").read_text(), *_readme_toml_blocks()])
def test_every_documented_configuration_builds_its_processors_from_the_snapshot(
        text: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in re.findall(r'\w+_env\s*=\s*"(\w+)"', text):
        monkeypatch.setenv(name, "a-secret-the-example-refers-to")
    # a script step names a site's module: the README's own example, on the path as at a site
    for code in re.findall(r"```python\n(# sitesteps\.py.*?)```", README, flags=re.S):
        (tmp_path / "sitesteps.py").write_text(code)
        monkeypatch.syspath_prepend(str(tmp_path))
    from engine.config.schema import lint_text
    config, problems = lint_text(text, "channels.toml", check_files=False)
    assert config is not None, problems
    for ch in config.channel:
        if ch.source is None:
            continue
        recipe = channel_recipe(config, ch.name)
        built = build_channel_processor(*recipe.args)
        assert (built.cpu_bound, built.needs_raw, type(built).__name__) == (
            _here(ch, config).cpu_bound, _here(ch, config).needs_raw,
            type(_here(ch, config)).__name__)


def _here(ch: Any, config: Any) -> Any:
    from engine.flow.bounds import bounded_processor
    return bounded_processor(ch, config)


def test_a_changed_configuration_has_a_new_recipe_key() -> None:
    a = make_config(orders("sqlite:///a.db"))
    b = make_config(orders("sqlite:///a.db", extra='filter = { field = "MSH-11", eq = "P" }'))
    assert channel_recipe(a, "ris").key == channel_recipe(a, "ris").key
    assert channel_recipe(a, "ris").key != channel_recipe(b, "ris").key
