"""SIGKILL `radbridge run` under load: nothing that got AA is lost (short CI version)."""

from __future__ import annotations

from bench.crashloop import crash_loop


async def test_sigkill_under_load_loses_no_acked_message() -> None:
    report = await crash_loop(kills=4, senders=3, seed=7)
    assert report.kills == 4
    assert len(report.acked) > 50  # the load really ran across the kills
    assert report.missing_in_store == 0, report.row()
    assert report.lost_downstream == 0, report.row()
    # At-least-once: duplicates only for messages in flight at a kill (a few per kill).
    assert report.duplicates <= report.kills * 64, report.row()
