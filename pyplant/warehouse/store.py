"""The file store: ``BlobBackend`` on the plant directory. Blobs are addressed by content
hash: ``<plantDir>/blobs/ab/cdef....<suffix>``.

A blob is written to a temporary file next to its final name and renamed into place, so a
killed process leaves at worst a ``*.tmp-*`` file, never a partial blob under a real name. With
``durable=True`` the file and its directory are fsynced before the rename is trusted (power
loss); without it a blob survives a killed process, which is the guarantee pyplant makes by
default (fsync of a 1 GB array costs more than writing it to the page cache).

Identical content is written once: a blob whose name exists is complete, and is reused. Its
location is recorded in the plant's lease (``hold``) before the blob is looked for, so GC never
deletes a blob between the moment it is found and the commit of the version using it.

Paths are resolved before they are trusted (``locations.Root``): a blob that is a symlink is
never read; one found where a blob is written is removed (the link, not its target).

GC lists what is stored under ``blobs/``, ``files/`` and ``specs/`` through ``stored`` and
removes through ``remove``; neither ever follows a symlink.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from typing import Callable, IO, Iterator

import numpy as np

from .. import hashing
from . import locations
from .backend import BlobBackend, StoredFile

logger = logging.getLogger(__name__)

# Arrays below this size are read into memory; larger ones are memory-mapped.
MMAP_MIN_BYTES = 1 << 20
# Arrays from this size on are hashed in a thread while being written, in chunks of:
PARALLEL_MIN_BYTES = 64 << 20
WRITE_CHUNK_BYTES = 16 << 20


def atomic_write(path: str, write: Callable[[IO[bytes]], None], durable: bool) -> None:
    """Write ``path`` through a temp file and a rename; fsync both when ``durable``."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path))


def inside(root: str, location: str) -> str:
    """The path of ``location`` under ``root``; refuses anything whose real path (symlinks
    resolved) leaves it, with ``ValueError`` (``locations.LocationError``).

    The warehouse never reads (let alone unpickles) a file outside its plant directory, even
    when its metadata was tampered with or a symlink was planted in it.
    """
    return locations.Root(root).path_of(location)


def fsync_dir(path: str) -> None:
    """fsync a directory (its entries: a rename or a new file in it survives power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reuse(path: str) -> bool:
    """True when a regular file exists at ``path``; its mtime is renewed (GC also spares files
    newer than the oldest live plant). A symlink in its place is removed and False returned."""
    try:
        if os.path.islink(path):
            os.unlink(path)
            return False
        os.utime(path)
        return True
    except FileNotFoundError:
        return False


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class BlobStore(BlobBackend):
    """Content-addressed files under ``<plant_dir>/blobs``; locations are relative to the plant
    directory.

    Parameters
    ----------
    plant_dir : str
        The plant directory.
    durable : bool
        fsync each blob and its directory before trusting its rename (power loss).
    hold : callable
        ``hold(location)`` is called before a blob is looked for or written (the plant's
        lease records it, so that GC keeps it).
    create : bool
        Create ``blobs/`` when missing (False for a read-only view).
    """

    def __init__(self, plant_dir: str, durable: bool = False,
                 hold: Callable[[str], None] = lambda location: None, create: bool = True):
        self.plant_dir = plant_dir
        self.paths = locations.Root(plant_dir)
        self.root = os.path.join(plant_dir, "blobs")
        self.durable = durable
        self.hold = hold
        if create:
            os.makedirs(self.root, exist_ok=True)

    def location(self, content_hash: str, suffix: str) -> str:
        """The location of the blob of ``content_hash`` with ``suffix`` (``.npy``)."""
        return locations.blob_location(content_hash, suffix)

    def abspath(self, location: str) -> str:
        """The path of ``location``; ``LocationError`` when it leads out of the plant directory."""
        return self.paths.path_of(location)

    def put_bytes(self, content_hash: str, data: bytes, suffix: str = ".pkl") -> str:
        return self._put(content_hash, suffix, lambda f: f.write(data))

    def put_array(self, arr: np.ndarray) -> tuple[str, str]:
        """Store an array as .npy; returns (content hash, location).

        A large C-ordered array is hashed in a thread while it is written (xxhash releases the
        GIL), so the hash costs nothing beside the write; as soon as the hash is known and
        its blob already exists (an identical array sent again), the write stops.
        """
        if arr.nbytes < PARALLEL_MIN_BYTES or not arr.flags.c_contiguous:
            content_hash = hashing.array_hash(arr)
            location = self._put(content_hash, ".npy",
                                 lambda f: np.lib.format.write_array(f, arr, allow_pickle=False))
            return content_hash, location
        return self._put_array_hashing_aside(arr)

    def _put_array_hashing_aside(self, arr: np.ndarray) -> tuple[str, str]:
        found: list[str] = []
        hasher = threading.Thread(target=lambda: found.append(hashing.array_hash(arr)), daemon=True)
        hasher.start()
        tmp = self.paths.path_for_write(f"blobs/array.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            complete = self._write_unless_known(tmp, arr, found)
            hasher.join()
            location = self.location(found[0], ".npy")
            self.hold(location)
            path = self.paths.path_for_write(location)
            if not complete or _reuse(path):
                _remove_quietly(tmp)
            else:
                os.replace(tmp, path)
                if self.durable:
                    fsync_dir(os.path.dirname(path))
        except BaseException:
            hasher.join()
            _remove_quietly(tmp)
            raise
        return found[0], location

    def _write_unless_known(self, tmp: str, arr: np.ndarray, found: list[str]) -> bool:
        """Write ``arr`` as .npy to ``tmp``; False when it stopped because the blob exists."""
        data = memoryview(arr).cast("B")
        with open(tmp, "wb") as f:
            header = np.lib.format.header_data_from_array_1_0(arr)
            np.lib.format.write_array_header_2_0(f, header)
            for start in range(0, len(data), WRITE_CHUNK_BYTES):
                if found and _is_regular(os.path.join(self.plant_dir, self.location(found[0], ".npy"))):
                    return False
                f.write(data[start:start + WRITE_CHUNK_BYTES])
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        return True

    def _put(self, content_hash: str, suffix: str, write: Callable[[IO[bytes]], None]) -> str:
        location = self.location(content_hash, suffix)
        self.hold(location)  # before looking: GC cannot delete it between the look and the commit
        path = self.paths.path_for_write(location)
        if not _reuse(path):
            atomic_write(path, write, self.durable)
        return location

    def get_bytes(self, location: str) -> bytes:
        with open(self.abspath(location), "rb") as f:
            return f.read()

    def get_array(self, location: str) -> np.ndarray:
        """Load an .npy blob: read-only and memory-mapped when large, a plain ``ndarray``."""
        path = self.abspath(location)
        if os.path.getsize(path) < MMAP_MIN_BYTES:
            arr = np.load(path, allow_pickle=False)
            arr.flags.writeable = False
            return arr
        return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)

    # --- what GC sweeps ---

    def stored(self) -> Iterator[StoredFile]:
        for location, path in _stored_files(self.paths):
            try:
                st = os.lstat(path)
            except OSError:  # removed meanwhile
                continue
            yield StoredFile(location, st.st_size, st.st_mtime)

    def remove(self, location: str) -> None:
        os.unlink(self.paths.lexical(location))  # a symlink goes itself; its target is never touched

    def prune_empty(self, keep: set[str]) -> None:
        """Remove the empty directories of file ingredients under ``files/`` whose location is
        not in ``keep`` (a referenced directory may be empty while its reactor runs)."""
        root = os.path.join(self.paths.path, "files")
        if os.path.islink(root):
            return
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            location = os.path.relpath(dirpath, self.paths.path).replace(os.sep, "/")
            if dirpath != root and not dirnames and not filenames and location not in keep:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def _stored_files(paths: locations.Root) -> Iterator[tuple[str, str]]:
    """(location, path) of every file and symlink under blobs/, files/ and specs/, without
    following any symlink."""
    for top in locations.TOPS:
        root = os.path.join(paths.path, top)
        if os.path.islink(root) or not paths.is_inside(os.path.join(root, "x")):
            logger.warning("gc: skipping %s: it leads out of the plant directory (%s)", root,
                           os.path.realpath(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):  # never descends into a symlink
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in filenames + links:
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, paths.path).replace(os.sep, "/"), path
