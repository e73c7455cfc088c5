"""Secrets in channels.toml: references (``<key>_env`` / ``<key>_file``) only, never values.

The review found ``dicomweb_poll.password`` passing lint and coming back from
``GET /api/config``; these tests hold the rule for every section and connector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from engine import registry
from engine.config.schema import Config, lint_text
from engine.config.secrets import (
    SecretUnavailable,
    looks_secret,
    read_secret,
    redact,
    url_has_password,
)
from engine.errors import PeerRejected

SECRET = "hunter2-the-real-secret"
POLL = 'name = "pacs"\nsource = {{ type = "dicomweb_poll", url = "http://pacs:8042", {} }}\n'


def problems(text: str, resolve: bool = True) -> list[str]:
    return [str(p) for p in lint_text(text, "channels.toml", resolve_secrets=resolve)[1]]


def test_a_dicomweb_poll_password_in_clear_is_refused_naming_where_it_belongs() -> None:
    found = problems("[[channel]]\n" + POLL.format(f'username = "u", password = "{SECRET}"'))
    assert found == ["channels.toml:3: channel[0].source.password: a secret does not belong "
                     "in channels.toml: use password_env (an environment variable) or "
                     "password_file (a file) instead"]


@pytest.mark.parametrize(("text", "line", "key"), [
    ('[store]\npassword = "x"\n', 2, "store.password"),
    ('[engine]\napi_key = "x"\n', 2, "engine.api_key"),
    ('[[channel]]\nname = "o"\ndestination = { type = "mllp", endpoint = "h:1", '
     'token = "x" }\n', 3, "channel[0].destination.token"),
    ('[[channel]]\nname = "o"\ndestination = { type = "fhir_rest", base_url = "http://f", '
     'auth = { type = "oauth2", token_url = "http://t", client_id = "c", '
     'client_secret = "x" } }\n', 3, "channel[0].destination.auth.client_secret"),
    ('[[channel]]\nname = "w"\ndestination = { type = "webhook", url = "http://w", '
     'secret = "x" }\n', 3, "channel[0].destination.secret"),
    ('[[channel]]\nname = "s"\ndestination = { type = "dicomweb_stow", url = "http://p", '
     'auth = "basic", username = "u", passwd = "x" }\n', 3, "channel[0].destination.passwd"),
    ('[[model]]\nname = "m"\nversion = "1"\nformat = "kserve"\n'
     'remote = { url = "http://t:8000", access_token = "x" }\n', 5,
     "model[0].remote.access_token"),
    ('[admin]\npassword = "x"\n', 2, "admin.password"),
    ('[somewhere]\nprivate_key = "x"\n', 2, "somewhere.private_key"),
])
def test_a_secret_looking_key_in_any_section_is_refused_at_its_line(
        text: str, line: int, key: str) -> None:
    found = [p for p in problems(text) if "secret does not belong" in p]
    assert len(found) == 1 and found[0].startswith(f"channels.toml:{line}: {key}: ")


def test_a_secret_is_reported_once_not_again_as_an_unknown_key() -> None:
    found = problems('[[channel]]\nname = "w"\ndestination = { type = "webhook", '
                     'url = "http://w", secret = "x" }\n')
    assert len(found) == 1 and "unknown key" not in found[0]


@pytest.mark.parametrize("url", ["postgresql://radbridge:s3cret@db/radbridge",
                                 "postgresql://db/radbridge?password=s3cret"])
def test_a_password_inside_the_store_url_is_refused_pointing_at_pgpassword(url: str) -> None:
    found = problems(f'[store]\nurl = "{url}"\n')
    assert len(found) == 1 and found[0].startswith("channels.toml:2: store.url: a password ")
    assert "PGPASSWORD" in found[0] and ".pgpass" in found[0] and "s3cret" not in found[0]


def test_a_password_inside_any_url_is_refused() -> None:
    found = problems("[[channel]]\n" + POLL.replace("http://pacs", "http://u:pw@pacs")
                     .format('start_from = "now"'))
    assert len(found) == 1 and "channel[0].source.url: a password inside a URL" in found[0]


def test_references_urls_and_key_paths_are_not_mistaken_for_secrets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RB_FHIR_SECRET", SECRET)
    text = ('[store]\nurl = "postgresql://radbridge@db:5432/radbridge"\n'
            '[[channel]]\nname = "o"\ndestination = { type = "fhir_rest", '
            'base_url = "https://fhir.example.org/r4", auth = { type = "oauth2", '
            'token_url = "https://auth/token", client_id = "c", '
            'client_secret_env = "RB_FHIR_SECRET" } }\n')
    assert problems(text) == []
    assert not any(map(looks_secret, ["token_url", "key", "password_env", "secret_file",
                                      "client_secret_env", "tokenizer", "max_tokens_per"]))


def test_a_secret_env_that_is_not_set_is_a_problem_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RB_TEST_UNSET", raising=False)
    text = "[[channel]]\n" + POLL.format('username = "u", password_env = "RB_TEST_UNSET"')
    assert problems(text) == ["channels.toml:3: channel[0].source.password_env: environment "
                              "variable $RB_TEST_UNSET is not set (or is blank)"]
    assert problems(text, resolve=False) == []  # the shape alone is fine
    monkeypatch.setenv("RB_TEST_UNSET", "  ")
    assert len(problems(text)) == 1
    monkeypatch.setenv("RB_TEST_UNSET", SECRET)
    assert problems(text) == []


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found: {path}"),
    ("  \n", "{path} is empty"),
    ("dir", "not a file: {path}"),
])
def test_a_secret_file_must_exist_be_readable_and_hold_something(
        tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "pacs.password"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    text = "[[channel]]\n" + POLL.format(f'username = "u", password_file = "{path}"')
    assert problems(text) == [f"channels.toml:3: channel[0].source.password_file: "
                              f"{message.format(path=path)}"]
    if content == "dir":
        path.rmdir()
    path.write_text(SECRET + "\n")
    assert problems(text) == []


def test_env_and_file_together_are_refused(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("RB_TEST_TOKEN", SECRET)
    (tmp_path / "t").write_text(SECRET)
    found = problems('[[channel]]\nname = "w"\ndestination = { type = "webhook", url = '
                     f'"http://w", secret_env = "RB_TEST_TOKEN", secret_file = "{tmp_path}/t" }}\n')
    assert len(found) == 1 and "set only one of secret_env and secret_file" in found[0]


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            _models(arg, seen)


def _types(annotation: Any) -> list[type[BaseModel]]:
    args = getattr(annotation, "__args__", None) or getattr(annotation, "__metadata__", ())
    found = [annotation] if isinstance(annotation, type) and issubclass(annotation,
                                                                         BaseModel) else []
    for arg in (*(args or ()), getattr(annotation, "__origin__", None)):
        if arg is not None and arg is not annotation:
            found.extend(_types(arg))
    return found


def test_no_config_model_declares_a_secret_in_clear_and_every_reference_has_both_forms(
) -> None:
    seen: set[type[BaseModel]] = set()
    _models(Config, seen)
    for spec in registry.connectors("source") + registry.connectors("destination"):
        _models(spec.config, seen)
    names = {(m.__name__, f) for m in seen for f in m.model_fields}
    assert len(seen) > 20  # the walk reached the connectors' and the models' sections
    assert [n for n in names if looks_secret(n[1])] == []
    envs = {(m, f.removesuffix("_env")) for m, f in names if f.endswith("_env")}
    assert envs and all((m, f"{base}_file") in names for m, base in envs)
    assert {"PollSourceConfig", "StowDestinationConfig", "BearerAuth", "OAuth2Auth",
            "WebhookDestinationConfig", "RemoteSpec"} <= {m for m, _ in envs}


def test_a_secret_is_read_at_use_and_errors_name_the_reference_never_the_value(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RB_TEST_SECRET", f" {SECRET}\n")
    assert read_secret("RB_TEST_SECRET", None, "PACS password") == SECRET
    (tmp_path / "s").write_text(SECRET + "\n")
    assert read_secret(None, str(tmp_path / "s"), "PACS password") == SECRET
    monkeypatch.delenv("RB_TEST_SECRET")
    with pytest.raises(SecretUnavailable, match=r"PACS password: \$RB_TEST_SECRET is not set"):
        read_secret("RB_TEST_SECRET", None, "PACS password")
    (tmp_path / "s").write_text("")
    with pytest.raises(SecretUnavailable, match="is empty"):
        read_secret(None, str(tmp_path / "s"), "PACS password")


async def test_a_destination_whose_secret_is_gone_records_a_rejection(
        tmp_path: Path) -> None:
    from channels.webhook import WebhookDestination, WebhookDestinationConfig

    config = WebhookDestinationConfig(type="webhook", url="http://127.0.0.1:9/",
                                      secret_file=str(tmp_path / "gone"))
    with pytest.raises(PeerRejected, match="webhook secret: cannot read"):
        await WebhookDestination("pager", config).send(b"{}")


def test_redact_hides_secret_values_and_url_passwords_but_keeps_references() -> None:
    dump = {"store": {"url": f"postgresql://u:{SECRET}@db/x"},
            "channel": [{"source": {"password": SECRET, "password_env": "PACS_PW",
                                    "token_url": "https://auth/token"}}]}
    shown = redact(dump)
    assert SECRET not in repr(shown)
    assert shown["channel"][0]["source"]["password_env"] == "PACS_PW"
    assert shown["channel"][0]["source"]["token_url"] == "https://auth/token"
    assert url_has_password(dump["store"]["url"]) and not url_has_password("http://h:80/x")
