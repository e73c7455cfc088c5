"""A worker process builds a channel's processor from the engine's snapshot of its
configuration: the lookup tables travel as the engine loaded them, so a worker never reads a
table file itself (a file relative to the configuration's directory, changed or gone since
the load, or a worker started in another working directory, makes no difference)."""

from __future__ import annotations

from pathlib import Path

from engine.config.schema import load_config
from engine.flow.workers import build_channel_processor, channel_recipe
from engine.model import Message, Status

ORM = (
    "MSH|^~\\&|RIS|HOSP|RB|AI|20260101120000||ORM^O01|C1|P|2.5\r"
    "PID|1||MRN1^^^HOSP^MR||doe^jane||19700102|F\r"
    "ORC|NW|P1|F1\r"
    "OBR|1|P1|F1|CT1^CT head^LOCAL||||||||||||||ACC1||||||CT\r"
)

CONFIG = """
[[channel]]
name = "ris"
source = { type = "mllp", listen = "127.0.0.1:0" }
forward_to = ["out"]
transform = [{ map = "OBR-4.1", lookup = "procedures", to = "OBR-4.4" }]
[[channel]]
name = "out"
destination = { type = "mllp", endpoint = "127.0.0.1:6661" }
[[lookup]]
name = "procedures"
file = "tables/procedures.csv"
key = "local"
value = "rpid"
"""


def test_a_worker_maps_through_the_table_the_engine_loaded_even_when_its_file_is_gone(
        tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    table = tmp_path / "tables" / "procedures.csv"
    table.write_text("local,rpid\nCT1,RPID16\n")
    (tmp_path / "channels.toml").write_text(CONFIG)
    config = load_config(tmp_path / "channels.toml")
    recipe = channel_recipe(config, "ris")
    table.unlink()  # a worker (re)built after this still maps as the engine does
    processor = build_channel_processor(*recipe.args)
    outcome = processor.process(Message(1, "ris", 0.0, Status.RECEIVED, ORM.encode()))
    assert outcome.status == Status.TRANSFORMED, outcome.error
    assert "|CT1^CT head^LOCAL^RPID16|" in outcome.layers["transformed"].decode()


def test_a_changed_table_gives_the_recipe_a_new_key(tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    table = tmp_path / "tables" / "procedures.csv"
    table.write_text("local,rpid\nCT1,RPID16\n")
    (tmp_path / "channels.toml").write_text(CONFIG)
    before = channel_recipe(load_config(tmp_path / "channels.toml"), "ris").key
    table.write_text("local,rpid\nCT1,RPID17\n")
    after = channel_recipe(load_config(tmp_path / "channels.toml"), "ris").key
    assert before != after
