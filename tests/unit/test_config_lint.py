"""channels.toml lint: every problem at once, as file:line: key: message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.schema import lint_text, load_config
from engine.config.tomlindex import index_lines
from engine.errors import ConfigErrors

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
[store]
url = "sqlite:///var/x.db"

[[channel]]
name = "ris"
source = { type = "mllp", listen = "0.0.0.0:2575", bogus = 1 }
forward_to = ["out", "nowhere"]

[[channel]]
name = "out"
destination = { type = "mllp", endpoint = "localhost:abc" }

[[channel]]
name = "ris"
source = { type = "mllp", listen = "127.0.0.1:2575" }

[[channel]]
name = "pager"
source = { type = "carrier-pigeon" }

[[route]]
models = ["no-such-model"]
"""


def lint(text: str) -> list[str]:
    return [str(p) for p in lint_text(text, "channels.toml")[1]]


def test_lint_reports_every_problem_with_file_line_and_key() -> None:
    assert lint(BROKEN) == [
        "channels.toml:6: channel[0].source.bogus: unknown key",
        "channels.toml:7: channel[0].forward_to[1]: unknown channel 'nowhere'",
        "channels.toml:11: channel[1].destination.endpoint: Value error, expected host:port, "
        "got 'localhost:abc'",
        "channels.toml:14: channel[2].name: duplicate channel name 'ris' (first at channel[0])",
        "channels.toml:15: channel[2].source.listen: port 2575 is already used by channel[0]",
        "channels.toml:19: channel[3].source.type: unknown source type 'carrier-pigeon' "
        "(known: ai_results, dicom, dicomweb, dicomweb_poll, mllp)",
        "channels.toml:22: route[0].models[0]: unknown model 'no-such-model'",
    ]


def test_a_toml_syntax_error_names_its_line() -> None:
    (problem,) = lint_text("[store]\nurl = \n", "c.toml")[1]
    assert problem.file == "c.toml" and problem.line == 2 and problem.key == "(syntax)"


def test_a_missing_required_key_points_at_its_table() -> None:
    text = '[[channel]]\nname = "a"\ndestination = { type = "file" }\n'
    assert lint(text) == ["channels.toml:3: channel[0].destination.directory: Field required"]


def test_forwarding_to_a_channel_without_destination_is_an_error() -> None:
    text = """
[[channel]]
name = "a"
source = { type = "mllp", listen = ":1" }
forward_to = ["b"]
[[channel]]
name = "b"
source = { type = "mllp", listen = ":2" }
"""
    assert lint(text) == ["channels.toml:5: channel[0].forward_to[0]: channel 'b' has no "
                          "destination to forward to"]


def test_listeners_on_different_hosts_may_share_a_port() -> None:
    text = """
[[channel]]
name = "a"
source = { type = "mllp", listen = "127.0.0.1:2575" }
[[channel]]
name = "b"
source = { type = "mllp", listen = "127.0.0.2:2575" }
"""
    assert lint(text) == []


def test_load_config_raises_with_all_problems() -> None:
    path = REPO / "tests" / "unit" / "broken.toml"
    path.write_text(BROKEN)
    try:
        with pytest.raises(ConfigErrors) as err:
            load_config(path)
        assert len(err.value.problems) == 7
    finally:
        path.unlink()


def test_the_sample_channels_toml_lints_clean() -> None:
    load_config(REPO / "channels.toml")


def _readme_toml_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_the_readme_has_config_examples() -> None:
    assert len(_readme_toml_blocks()) >= 2


@pytest.mark.parametrize("block", _readme_toml_blocks())
def test_every_readme_config_example_lints_clean(block: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in re.findall(r'\w+_env\s*=\s*"(\w+)"', block):  # the secrets it refers to
        monkeypatch.setenv(name, "a-secret-the-example-refers-to")
    # The examples name certificate files that exist only where they are deployed.
    assert lint_text(block, "channels.toml", check_files=False)[1] == []


def test_radbridge_lint_exits_nonzero_and_prints_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "lint", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 7
    assert out.stderr.startswith(f"{bad}:6: channel[0].source.bogus")
    ok = subprocess.run([sys.executable, "-m", "engine.cli", "lint", "channels.toml"],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr


def test_index_covers_array_tables_inline_tables_and_multiline_arrays() -> None:
    idx = index_lines('[[channel]]\nname = "a"\n[[channel]]\nx = { y = { z = 1 } }\n'
                      'accept = [\n  "A",\n  "B",\n]\n[channel.sub]\nk = 1\n')
    assert idx[("channel", 1, "x", "y", "z")] == 4
    assert idx[("channel", 1, "accept", 1)] == 7
    assert idx[("channel", 1, "sub", "k")] == 10
