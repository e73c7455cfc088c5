"""DirSync: threads that need one folder fsynced at the same moment share one fsync."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

from engine.errors import StoreUnavailable
from engine.flow.durable import DirSync


class GatedFsync:
    """An fsync whose first call waits for ``release`` (and fails when told to)."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[Path] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self, directory: Path) -> None:
        self.calls.append(directory)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
            if self.fail_first:
                raise OSError(errno.EIO, "Input/output error")


def wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


def start(sync: DirSync, folder: Path, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            sync.sync([folder])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_callers_arriving_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    fsync = GatedFsync()
    sync = DirSync(fsync)
    errors: list[BaseException] = []
    first = start(sync, tmp_path, errors)
    assert fsync.entered.wait(30)
    later = [start(sync, tmp_path, errors) for _ in range(3)]
    wait_until(lambda: sync.pending(tmp_path) == 4)
    fsync.release.set()
    for thread in [first, *later]:
        thread.join(30)
    assert errors == []
    # the first fsync began before the others renamed anything: one more covers all three
    assert fsync.calls == [tmp_path, tmp_path]
    assert sync.pending(tmp_path) == 0


def test_a_failed_fsync_fails_its_caller_and_a_waiter_fsyncs_again(tmp_path: Path) -> None:
    fsync = GatedFsync(fail_first=True)
    sync = DirSync(fsync)
    errors: list[BaseException] = []
    first = start(sync, tmp_path, errors)
    assert fsync.entered.wait(30)
    waiter = start(sync, tmp_path, errors)
    wait_until(lambda: sync.pending(tmp_path) == 2)
    fsync.release.set()
    first.join(30)
    waiter.join(30)
    (error,) = errors
    assert isinstance(error, StoreUnavailable) and "Input/output error" in str(error)
    assert fsync.calls == [tmp_path, tmp_path]


def test_each_folder_is_synced_once_per_call(tmp_path: Path) -> None:
    calls: list[Path] = []
    sync = DirSync(calls.append)
    folders = [tmp_path / "a", tmp_path / "b", tmp_path]
    sync.sync(folders)
    assert calls == folders
    with pytest.raises(StoreUnavailable, match="cannot sync instance folder"):
        DirSync().sync([tmp_path / "missing"])
