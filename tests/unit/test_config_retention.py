"""[engine] retention keys: messages are kept unless a period is set; bad values name their line."""

from __future__ import annotations

from engine.config.schema import lint_text


def problems(text: str) -> list[str]:
    return [str(p) for p in lint_text(text, "c.toml")[1]]


def test_messages_are_kept_and_not_archived_by_default() -> None:
    config, found = lint_text("[engine]\n", "c.toml")
    assert found == [] and config is not None
    assert config.engine.message_retention_days is None
    assert config.engine.message_archive_dir is None


def test_retention_period_and_archive_directory_are_read() -> None:
    config, found = lint_text('[engine]\nmessage_retention_days = 30.5\n'
                              'message_archive_dir = "var/message-archive"\n', "c.toml")
    assert found == [] and config is not None
    assert config.engine.message_retention_days == 30.5
    assert config.engine.message_archive_dir == "var/message-archive"


def test_a_period_that_is_not_positive_names_its_line() -> None:
    assert problems("[engine]\ndata_dir = \"var\"\nmessage_retention_days = 0\n") == [
        "c.toml:3: engine.message_retention_days: Input should be greater than 0"]
    assert problems('[engine]\nmessage_retention_days = "forever"\n') == [
        "c.toml:2: engine.message_retention_days: Input should be a valid number, unable to "
        "parse string as a number"]


def test_a_misspelt_key_is_reported() -> None:
    assert problems("[engine]\nmessages_retention_days = 7\n") == [
        "c.toml:2: engine.messages_retention_days: unknown key"]
