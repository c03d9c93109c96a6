"""Leases (``pyplant/warehouse/leases.py``), one rule at a time: what a lease journal holds, and
how GC's reader treats live, dead, half-created, symlinked and unreadable lease files (found by
mutation testing)."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time

import pytest

from pyplant.warehouse import leases
from pyplant.warehouse.leases import Lease, UnreadableLease, live_leases


@pytest.fixture
def lease(tmp_path):
    held = Lease(str(tmp_path))
    yield held
    held.release()


def journal(lease):
    with open(lease.path) as f:
        return [json.loads(line) for line in f.read().splitlines()[1:]]


def test_a_location_is_journaled_once_and_none_never(lease):
    lease.hold("blobs/ab/cd.npy")
    lease.hold("blobs/ab/cd.npy")
    lease.hold(None)
    lease.hold("files/x@0123456789abcdef")
    assert journal(lease) == ["blobs/ab/cd.npy", "files/x@0123456789abcdef"]
    assert lease.held == {"blobs/ab/cd.npy", "files/x@0123456789abcdef"}
    [record] = live_leases(str(lease.dir).rsplit("/", 1)[0])
    assert record.pid == os.getpid() and record.held == lease.held


def locked(path, text):
    """A file at ``path`` holding ``text``, locked as a live plant locks its lease."""
    with open(path, "w") as f:
        f.write(text)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_symlink_named_like_a_lease_is_never_followed(tmp_path):
    """A symlink in leases/ to a locked file outside: GC neither reads it (it would refuse to
    delete anything, the file being no lease) nor removes it."""
    plant_dir = tmp_path / "plant"
    (plant_dir / "leases").mkdir(parents=True)
    fd = locked(tmp_path / "outside", "not a lease\n")
    try:
        os.symlink(tmp_path / "outside", plant_dir / "leases" / "1-1.lease")
        assert live_leases(str(plant_dir)) == []
        assert os.path.islink(plant_dir / "leases" / "1-1.lease")
    finally:
        os.close(fd)


def test_an_unreadable_live_lease_names_its_file_and_the_error(tmp_path):
    (tmp_path / "leases").mkdir()
    path = tmp_path / "leases" / "1-1.lease"
    fd = locked(path, '{"pid": 1, "started": 0}\nnot json\n')
    try:
        with pytest.raises(UnreadableLease) as info:
            live_leases(str(tmp_path))
    finally:
        os.close(fd)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"the lease {path} of a live plant is unreadable (Expecting value")


def test_a_half_created_lease_is_removed_only_once_it_is_a_minute_old(tmp_path):
    """A lease is written under a temporary name and locked right after it is created: an
    unlocked temporary younger than a minute may be one being created, an older one is dead."""
    (tmp_path / "leases").mkdir()
    young = tmp_path / "leases" / "1-1.lease.tmp-aaaa"
    old = tmp_path / "leases" / "1-2.lease.tmp-bbbb"
    for path in (young, old):
        path.write_text("")
    now = time.time()
    os.utime(young, (now - 50, now - 50))
    os.utime(old, (now - 60.6, now - 60.6))
    assert live_leases(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path / "leases")) == [young.name]


def test_a_dead_lease_that_cannot_be_removed_is_logged(tmp_path, caplog):
    (tmp_path / "leases" / "1-1.lease").mkdir(parents=True)  # unlink refuses a directory
    caplog.set_level(logging.WARNING, logger=leases.logger.name)
    assert live_leases(str(tmp_path)) == []
    path = tmp_path / "leases" / "1-1.lease"
    assert [r.getMessage() for r in caplog.records] == [
        f"could not remove the dead lease {path}: [Errno 21] Is a directory: '{path}'"]


class Waiting(logging.Handler):
    def __init__(self):
        super().__init__()
        self.event = threading.Event()
        self.messages = []

    def emit(self, record):
        try:
            self.messages.append(record.getMessage())
        finally:
            self.event.set()


def test_a_plant_recording_a_location_waits_for_a_running_gc_and_says_so(tmp_path, lease):
    handler = Waiting()
    leases.logger.addHandler(handler)
    old_level = leases.logger.level
    leases.logger.setLevel(logging.INFO)
    fd = os.open(tmp_path / "gc.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a GC in another process
    thread = threading.Thread(target=lambda: (lease.hold("blobs/ab/cd.npy"), handler.event.set()))
    try:
        thread.start()
        assert handler.event.wait(60)
        assert journal(lease) == []  # not recorded while GC runs
    finally:
        os.close(fd)
        thread.join(60)
        leases.logger.removeHandler(handler)
        leases.logger.setLevel(old_level)
    assert handler.messages == [f"waiting for a garbage collection of {tmp_path} to finish"]
    assert journal(lease) == ["blobs/ab/cd.npy"]


def test_compacting_rewrites_the_journal_and_later_locations_are_still_recorded(tmp_path, lease):
    for location in ("blobs/ab/1.npy", "blobs/ab/2.npy", "blobs/ab/3.npy"):
        lease.hold(location)
    lease.compact(["blobs/ab/2.npy"])
    assert journal(lease) == ["blobs/ab/2.npy"]
    inode = os.stat(lease.path).st_ino
    lease.compact(["blobs/ab/2.npy"])  # nothing to drop: the journal is not rewritten
    assert os.stat(lease.path).st_ino == inode
    lease.hold("blobs/ab/4.npy")
    assert journal(lease) == ["blobs/ab/2.npy", "blobs/ab/4.npy"]
    [record] = live_leases(str(tmp_path))
    assert record.held == {"blobs/ab/2.npy", "blobs/ab/4.npy"}


def test_a_released_lease_is_gone_and_compacting_it_makes_no_new_one(tmp_path, lease):
    lease.hold("blobs/ab/1.npy")
    lease.release()
    lease.compact(["blobs/ab/2.npy"])
    lease.hold("blobs/ab/3.npy")
    assert os.listdir(tmp_path / "leases") == [] and live_leases(str(tmp_path)) == []


def test_recording_a_location_leaves_the_gc_lock_free(tmp_path, lease):
    """A plant holds the GC gate shared only while it records: GC can take it right after."""
    lease.hold("blobs/ab/1.npy")
    lease.compact([])
    fd = os.open(tmp_path / "gc.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while still held
    finally:
        os.close(fd)


def test_a_lease_that_cannot_be_replaced_leaves_no_temporary_and_keeps_the_old_one(tmp_path, lease, monkeypatch):
    lease.hold("blobs/ab/1.npy")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(leases.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        lease.compact([])
    monkeypatch.undo()
    assert os.listdir(tmp_path / "leases") == [os.path.basename(lease.path)]
    assert journal(lease) == ["blobs/ab/1.npy"]
    [record] = live_leases(str(tmp_path))
    assert record.held == {"blobs/ab/1.npy"}
