"""Channels (state, stop/start/redeploy), statistics, queues and configuration reload."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.admin import phi
from engine.admin.auth import STAFF_ROLES
from engine.admin.http import AdminState, audit, fail, ok, read_json, state, who
from engine.admin.routing import Panel, Router, register_panel
from engine.config.schema import lint_text
from engine.config.secrets import redact
from engine.flow import dryrun
from engine.flow.controls import plan_reload
from engine.store.protocols import MessageDesk

router = Router("channels")
OPERATORS = ("admin", "analyst")
_NOT_FOUND = {404: "no such channel"}
_CHANNELS = phi.view(phi.CHANNEL, {"channels"}, maps=phi.CHANNEL_MAPS)

register_panel(Panel("channels", "Channels", "panels/channels.js", STAFF_ROLES, order=10))
register_panel(Panel("queues", "Queues", "panels/queues.js", STAFF_ROLES, order=30))


def _store(request: web.Request) -> MessageDesk:
    """The store, as this module uses it (``engine.store.protocols.MessageDesk``)."""
    store: MessageDesk = state(request).engine.store
    return store


def _address(source: Any) -> str | None:
    addr = getattr(source, "address", None) if source is not None else None
    return f"{addr[0]}:{addr[1]}" if addr else None


def channel_view(st: AdminState, ch: Any, rates: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One channel as the API shows it: configuration summary, state and statistics."""
    engine = st.engine
    sink = engine.ingests.get(ch.name)
    acks = {k: v for k, v in getattr(sink, "stats", {}).items() if k != "received"}
    return {"name": ch.name, "description": ch.description, "enabled": ch.enabled,
            "state": engine.controls.channel_state(ch.name),
            "paused": ch.name in engine.controls.paused,
            "source": ch.source.type if ch.source else None,
            "destination": ch.destination.type if ch.destination else None,
            "address": _address(engine.sources.get(ch.name)),
            "forward_to": list(ch.destinations), "accept": ch.accept, "acks": acks,
            **st.sampler.channel_stats(ch.name, rates)}


def _find(st: AdminState, name: str) -> Any:
    for ch in st.engine.config.channel:
        if ch.name == name:
            return ch
    fail(404, f"no channel named {name!r}")


@router.get("/api/channels", roles=STAFF_ROLES, summary="Every channel with state and statistics",
            viewer=_CHANNELS)
async def list_channels(request: web.Request) -> web.Response:
    st = state(request)
    rates = st.sampler.rates()
    return ok({"channels": [channel_view(st, ch, rates) for ch in st.engine.config.channel],
               "sampled_at": st.sampler.snapshot.at or None})


@router.get("/api/channels/{name}", roles=STAFF_ROLES, summary="One channel",
            responses={200: "OK", **_NOT_FOUND}, viewer=_CHANNELS)
async def get_channel(request: web.Request) -> web.Response:
    st = state(request)
    return ok(channel_view(st, _find(st, request.match_info["name"]), st.sampler.rates()))


async def _act(request: web.Request, action: str,
               run: Callable[[str], Awaitable[None]]) -> web.Response:
    st = state(request)
    ch = _find(st, request.match_info["name"])
    await audit(request, action, ch.name)
    try:
        await run(ch.name)
    except ValueError as exc:
        fail(409, str(exc))
    except KeyError:
        fail(409, f"channel {ch.name} has nothing to {action.split('.')[-1]}")
    except OSError as exc:
        fail(409, f"channel {ch.name} could not start: {exc.strerror or exc}")
    await st.sampler.refresh()
    return ok(channel_view(st, _find(st, ch.name), st.sampler.rates()))


_ACT = {200: "the channel after the change", 404: "no such channel",
        409: "not possible in the channel's state"}


@router.post("/api/channels/{name}/stop", roles=OPERATORS, audited=True, responses=_ACT,
             summary="Stop one channel (listener, pipeline, delivery); the others go on")
async def stop_channel(request: web.Request) -> web.Response:
    return await _act(request, "channel.stop", state(request).engine.controls.stop_channel)


@router.post("/api/channels/{name}/start", roles=OPERATORS, audited=True, responses=_ACT,
             summary="Start a stopped channel")
async def start_channel(request: web.Request) -> web.Response:
    return await _act(request, "channel.start", state(request).engine.controls.start_channel)


@router.post("/api/channels/{name}/redeploy", roles=OPERATORS, audited=True, responses=_ACT,
             summary="Restart one channel with its current configuration")
async def redeploy_channel(request: web.Request) -> web.Response:
    return await _act(request, "channel.redeploy", state(request).engine.controls.redeploy_channel)


@router.get("/api/stats", roles=STAFF_ROLES,
            summary="Per channel: received, filtered, queued, sent, errored, and rates",
            viewer=phi.view(phi.CHANNEL, maps={"channels", *phi.CHANNEL_MAPS}))
async def get_stats(request: web.Request) -> web.Response:
    st = state(request)
    rates = st.sampler.rates()
    return ok({"sampled_at": st.sampler.snapshot.at or None,
               "channels": {ch.name: st.sampler.channel_stats(ch.name, rates)
                            for ch in st.engine.config.channel}})


def queue_view(st: AdminState, name: str, masked: bool = False) -> dict[str, Any]:
    worker = st.engine.workers.get(name)
    stats = st.sampler.channel_stats(name, {})
    return {"name": name, "state": st.engine.controls.channel_state(name),
            "paused": name in st.engine.controls.paused, **stats["queue"],
            "deliveries": stats["deliveries"],
            "sent": worker.sent if worker else None, "errors": worker.errors if worker else None,
            "retries": worker.retries if worker else None,
            "backoff_secs": worker.backoff if worker else None,
            "head": _head(worker, masked), "stalled": name in st.engine.stalled_queues()}


def _head(worker: Any, masked: bool) -> dict[str, Any] | None:
    """The delivery the worker is on, and since when (its last failure: not for viewers)."""
    head = worker.head if worker is not None else None
    if head is None:
        return None
    return {"delivery": head.id, "message": head.message_id,
            "age_secs": round(worker.head_age(), 1),
            "last_error": None if masked else worker.last_error}


@router.get("/api/queues", roles=STAFF_ROLES,
            summary="Destination queues: depth, oldest waiting, paused, retries, the head "
                    "and whether it is stalled",
            viewer=phi.view(phi.CHANNEL, {"queues"}, maps=phi.CHANNEL_MAPS))
async def list_queues(request: web.Request) -> web.Response:
    st = state(request)
    masked = who(request).masked
    return ok({"queues": [queue_view(st, ch.name, masked) for ch in st.engine.config.channel
                          if ch.destination is not None]})


@router.post("/api/queues/{name}/pause", roles=OPERATORS, audited=True, responses=_ACT,
             summary="Stop sending from a queue (messages keep queueing)")
async def pause_queue(request: web.Request) -> web.Response:
    await _act(request, "queue.pause", state(request).engine.controls.pause_queue)
    return ok(queue_view(state(request), request.match_info["name"]))


@router.post("/api/queues/{name}/resume", roles=OPERATORS, audited=True, responses=_ACT,
             summary="Resume sending from a paused queue")
async def resume_queue(request: web.Request) -> web.Response:
    await _act(request, "queue.resume", state(request).engine.controls.resume_queue)
    return ok(queue_view(state(request), request.match_info["name"]))


@router.get("/api/config", roles=OPERATORS, summary="The running configuration (secrets "
            "appear as their references, password_env = \"NAME\", never as values)")
async def get_config(request: web.Request) -> web.Response:
    engine = state(request).engine
    return ok({"path": engine.config_path,
               "config": redact(engine.config.model_dump(mode="json"))})


_RELOAD_BODY = {"type": "object", "properties": {"dry_run": {
    "type": "boolean", "description": "Lint and show the plan; change nothing."}}}


@router.post("/api/config/reload", roles=OPERATORS, audited=True, body=_RELOAD_BODY,
             summary="Lint channels.toml and apply it: only changed channels restart",
             responses={200: "the plan (and what failed to start)",
                        409: "the engine was not started from a file",
                        422: "lint problems; nothing changed"})
async def reload_config(request: web.Request) -> web.Response:
    st = state(request)
    dry_run = bool((await read_json(request)).get("dry_run"))
    path = st.engine.config_path
    if path is None:
        fail(409, "this engine was not started from a configuration file")
    try:
        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        fail(422, f"cannot read {path}: {exc.strerror}", problems=[])
    config, problems = lint_text(text, str(path))
    if problems or config is None:
        await audit(request, "config.reload.refused", str(path), problems=len(problems))
        fail(422, "the configuration has problems; nothing changed",
             problems=[str(p) for p in problems])
    if dry_run:
        await audit(request, "config.reload.dry_run", str(path))
        return ok({"applied": False, **dataclasses.asdict(plan_reload(st.engine.config,
                                                                       config))})
    await audit(request, "config.reload", str(path))
    plan = await st.engine.controls.reload(config)
    await st.sampler.refresh()
    return ok({"applied": True, **dataclasses.asdict(plan)})


# -- the tester: a message through a channel's steps, nothing stored or sent -----------------

READERS = ("admin", "analyst", "viewer")
_TRY_BODY = {
    "type": "object", "additionalProperties": False,
    "description": "a message pasted (message) or a stored one (message_id)",
    "properties": {"message": {"type": "string", "maxLength": 1_048_576},
                   "message_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}}
# step and change values were masked for viewers by the message_diff view, payloads and
# layers by the message_layer view; errors and reasons (they may quote the message) are not
_TRY_VIEW = phi.view({"status", "masked", "message_type", "steps", "scope", "name", "result",
                      "changes", "path", "kind", "before", "after", "deliveries",
                      "destination", "raw", "payload"}, phi.LAYERS)


async def _try_input(request: web.Request, body: dict[str, Any], channel: str) -> bytes:
    """The message to try: pasted, or read from the store (a PHI view: audited first)."""
    masked = who(request).masked
    if body.get("message_id") is not None:
        message_id = int(body["message_id"])
        found = await _store(request).get_message(message_id)
        if found is None:
            fail(404, f"no message {message_id}")
        await audit(request, "message.try", str(message_id), channel=channel, masked=masked)
        return found[0].raw
    if not body.get("message"):
        fail(400, "give a message (its text) or a message_id")
    await audit(request, "channel.try", channel, masked=masked)
    return str(body["message"]).encode("utf-8")


@router.post("/api/channels/{name}/try", roles=READERS, audited=True, body=_TRY_BODY,
             viewer=_TRY_VIEW,
             summary="Dry-run one message (pasted, or a stored one by id) through the "
                     "channel's steps: each step's changes and the outcome; nothing is "
                     "stored or sent",
             responses={200: "the trace", 400: "no message given", 404: "no such channel or "
                        "message"})
async def try_channel(request: web.Request) -> web.Response:
    st = state(request)
    ch = _find(st, request.match_info["name"])
    raw = await _try_input(request, await read_json(request), ch.name)
    masked = who(request).masked

    def dry_run() -> dict[str, Any]:
        return dryrun.report(dryrun.try_message(ch, st.engine.config, raw), masked)

    return ok({"channel": ch.name, **await asyncio.to_thread(dry_run)})
