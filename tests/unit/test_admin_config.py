"""The [admin] section of channels.toml and the reload plan."""

from __future__ import annotations

import pytest

from engine.config.schema import lint_text
from engine.flow.controls import plan_reload
from tests.conftest import make_config

BASE = """
[[channel]]
name = "ris"
source = { type = "mllp", listen = "127.0.0.1:2575" }
forward_to = ["out"]
[[channel]]
name = "out"
destination = { type = "file", directory = "var/out" }
"""


def test_without_an_admin_section_there_is_no_admin_api() -> None:
    assert make_config(BASE).admin is None


def test_the_admin_section_has_safe_defaults() -> None:
    admin = make_config("[admin]\n" + BASE).admin
    assert admin is not None and admin.enabled and admin.listen == "127.0.0.1:8080"
    assert admin.tls is None and not admin.metrics_public and admin.stats_interval_secs == 5


@pytest.mark.parametrize("key", ["password", "users", "tokens", "secret"])
def test_secrets_in_the_admin_section_are_refused_with_where_they_belong(key: str) -> None:
    _, problems = lint_text(f'[admin]\n{key} = "x"\n' + BASE)
    assert len(problems) == 1
    # "users" is refused by the admin section; password, tokens, secret by the rule on
    # secret-looking keys that every section keeps (engine.config.secrets), at their line
    assert (problems[0].line, problems[0].key) in ((1, "admin"), (2, f"admin.{key}"))
    assert "RADBRIDGE_ADMIN_PASSWORD" in problems[0].message


def test_every_admin_problem_is_reported_with_its_line() -> None:
    text = ('[admin]\nlisten = "127.0.0.1:2575"\nsession_idle_secs = -1\n' + BASE
            + '[[channel]]\nname = "admin"\ndestination = { type = "file", directory = "x" }\n')
    _, problems = lint_text(text)
    found = {(p.line, p.key) for p in problems}
    assert (2, "admin.listen") in found and (3, "admin.session_idle_secs") in found
    assert any(p.key.endswith(".name") and "reserved" in p.message for p in problems)


def test_a_malformed_admin_listen_address_is_a_problem() -> None:
    _, problems = lint_text('[admin]\nlisten = "nowhere"\n' + BASE)
    assert [p.key for p in problems] == ["admin.listen"]


def test_a_disabled_admin_section_may_share_nothing() -> None:
    _, problems = lint_text('[admin]\nenabled = false\nlisten = "127.0.0.1:2575"\n' + BASE)
    assert problems == []


def test_the_reload_plan_names_added_removed_changed_and_unchanged_channels() -> None:
    old = make_config(BASE + '[[channel]]\nname = "gone"\ndestination = { type = "file", '
                             'directory = "g" }\n')
    new = make_config(BASE.replace("2575", "2576") + '[[channel]]\nname = "new"\n'
                      'destination = { type = "file", directory = "n" }\n')
    plan = plan_reload(old, new)
    assert (plan.added, plan.removed, plan.changed, plan.unchanged) == (
        ["new"], ["gone"], ["ris"], ["out"])
    assert plan.restart_required == []


def test_the_reload_plan_lists_sections_that_need_a_restart() -> None:
    old = make_config(BASE)
    new = make_config('[store]\nurl = "sqlite:///elsewhere.db"\n[admin]\n' + BASE)
    assert plan_reload(old, new).restart_required == ["store", "admin"]
