"""Checks across the whole configuration, not just each part.

Runs on the raw TOML document so that it can report alongside field errors:
duplicate names, two listeners on one port or AE title, references to
unknown channels or models.
"""

from __future__ import annotations

from typing import Any

from engine import registry
from engine.config.tomlindex import line_for
from engine.errors import ConfigProblem

_ANY_HOST = {"0.0.0.0", "::", ""}


def check_topology(doc: dict[str, Any], index: dict[Any, int], file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def add(loc: tuple[str | int, ...], key: str, message: str) -> None:
        problems.append(ConfigProblem(file, line_for(index, loc)[0], key, message))

    channels = [c for c in doc.get("channel", []) if isinstance(c, dict)]
    by_name: dict[str, int] = {}
    for i, ch in enumerate(channels):
        name = ch.get("name")
        if isinstance(name, str):
            if name in by_name:
                add(("channel", i, "name"), f"channel[{i}].name",
                    f"duplicate channel name {name!r} (first at channel[{by_name[name]}])")
            else:
                by_name[name] = i
        if "source" not in ch and "destination" not in ch:
            add(("channel", i), f"channel[{i}]", "a channel needs a source, a destination or both")
        for kind in unknown_types(ch):
            known = ", ".join(s.type for s in registry.connectors(kind)) or "none"
            add(("channel", i, kind, "type"), f"channel[{i}].{kind}.type",
                f"unknown {kind} type {ch[kind].get('type')!r} (known: {known})")
    _check_listeners(channels, add)
    _check_forwards(channels, by_name, add)
    _check_models(doc, add)
    return problems


def unknown_types(ch: dict[str, Any]) -> list[registry.Kind]:
    """The connector kinds of *ch* whose ``type`` is not registered."""
    out: list[registry.Kind] = []
    for kind in ("source", "destination"):
        conf = ch.get(kind)
        if isinstance(conf, dict) and conf.get("type") not in registry.type_names(kind):
            out.append(kind)  # type: ignore[arg-type]
    return out


def _listen_of(ch: dict[str, Any]) -> tuple[str, int] | None:
    src = ch.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("listen"), str):
        return None
    host, _, port = src["listen"].rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


def _check_listeners(channels: list[dict[str, Any]], add: Any) -> None:
    seen: list[tuple[str, int, int]] = []
    ae_titles: dict[str, int] = {}
    for i, ch in enumerate(channels):
        hp = _listen_of(ch)
        if hp is not None and hp[1] != 0:
            host, port = hp
            for other_host, other_port, j in seen:
                overlap = host == other_host or host in _ANY_HOST or other_host in _ANY_HOST
                if port == other_port and overlap:
                    add(("channel", i, "source", "listen"), f"channel[{i}].source.listen",
                        f"port {port} is already used by channel[{j}]")
            seen.append((host, port, i))
        src = ch.get("source")
        ae = src.get("ae_title") if isinstance(src, dict) else None
        if isinstance(ae, str):
            if ae in ae_titles:
                add(("channel", i, "source", "ae_title"), f"channel[{i}].source.ae_title",
                    f"AE title {ae!r} is already used by channel[{ae_titles[ae]}]")
            ae_titles.setdefault(ae, i)


def _check_forwards(channels: list[dict[str, Any]], by_name: dict[str, int], add: Any) -> None:
    for i, ch in enumerate(channels):
        targets = ch.get("forward_to", [])
        if not isinstance(targets, list):
            continue
        for k, target in enumerate(targets):
            loc: tuple[str | int, ...] = ("channel", i, "forward_to", k)
            key = f"channel[{i}].forward_to[{k}]"
            if isinstance(target, dict):
                target, loc, key = target.get("to"), loc + ("to",), key + ".to"
            if target not in by_name:
                add(loc, key, f"unknown channel {target!r}")
            elif "destination" not in channels[by_name[target]]:
                add(loc, key, f"channel {target!r} has no destination to forward to")
        if targets and "source" not in ch:
            add(("channel", i, "forward_to"), f"channel[{i}].forward_to",
                "only a channel with a source can forward")


def _check_models(doc: dict[str, Any], add: Any) -> None:
    models = [m for m in doc.get("model", []) if isinstance(m, dict)]
    names: dict[str, int] = {}
    for i, m in enumerate(models):
        name = m.get("name")
        if isinstance(name, str) and name in names:
            add(("model", i, "name"), f"model[{i}].name", f"duplicate model name {name!r}")
        elif isinstance(name, str):
            names[name] = i
    for i, route in enumerate(r for r in doc.get("route", []) if isinstance(r, dict)):
        for k, model in enumerate(route.get("models", []) or []):
            if model not in names:
                add(("route", i, "models", k), f"route[{i}].models[{k}]",
                    f"unknown model {model!r}")
