"""The warehouse: every version of every ingredient, on disk.

=================  ==========================================================================
simple/list/object pickled (protocol 5; dill for lambdas and closures); inline in the LMDB
                   record below 64 KiB, else a content-addressed ``.pkl`` blob
array              content-addressed ``.npy`` blob; loaded read-only, memory-mapped. Exactly
                   ``np.ndarray`` and ``np.memmap`` (received as a read-only ``ndarray``);
                   other subclasses (masked arrays, ``np.matrix``, ``np.recarray``, ...) are
                   pickled, so that their type, mask and attributes survive
file               ``files/<storage>/<basename>``, hashed when the reactor ends
spec types         the spec writes ``specs/<storage>*``
=================  ==========================================================================

Every location comes from ``locations.py`` (one definition for writing, loading, freeing and
GC); a location that no rule there derives is refused. Each location is recorded in the
plant's lease (``leases.py``) before it is loaded, allocated or written, so GC never deletes
what a live plant holds or is producing.

A value is written when it is sent; the version becomes visible only when its reactor finishes
and the metadata transaction naming it commits (see ``metadata.py``). A crash in between leaves
an unreferenced file, never a reference to a missing one.
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from typing import Any, Iterable

import dill
import numpy as np

from .. import hashing
from ..errors import AllocationError, CorruptVersionError, SerializationError, WarehouseError
from ..ingredient import BUILTIN_TYPES, SIMPLE_TYPES
from . import locations
from .leases import Lease
from .locations import LocationError
from .metadata import MetadataStore, Trace, Version
from .specs import HdfArraySpec, IngredientTypeSpec, ScipySparseSpec
from .store import BlobStore, fsync_dir

logger = logging.getLogger(__name__)

INLINE_MAX_BYTES = 1 << 16
# Versions up to this size are verified against their content hash on their first load by a
# plant; larger arrays and files get a size check (hashing them would cost a pass over disk).
VERIFY_MAX_BYTES = 64 << 20
# Array types stored as .npy; a memmap is received as a read-only ndarray.
NPY_TYPES = (np.ndarray, np.memmap)

__all__ = ["Warehouse", "Version", "Trace", "Stored"]


@dataclass
class Stored:
    """A value written by ``Warehouse.store``, waiting for its reactor to finish.

    ``value`` is what consumers in this session receive.
    """
    version: Version
    value: Any


class Warehouse:
    """Stores and loads versions; the plant's ``warehouse`` attribute.

    Parameters
    ----------
    plant_dir : str
        The plant directory (created by the caller).
    durable : bool
        fsync blobs and metadata commits (power-loss durability), see ``store.py``.
    """

    def __init__(self, plant_dir: str, durable: bool = False, logger: logging.Logger | None = None):
        self.plantDir = plant_dir
        self.baseDir = os.path.join(plant_dir, "specs")  # where specs write; PyPlant's name
        self.durable = durable
        self.logger = logger or logging.getLogger("pyplant")
        self._closed = False
        self.paths = locations.Root(plant_dir)
        for top in locations.TOPS:
            os.makedirs(os.path.join(plant_dir, top), exist_ok=True)
        self._warn_about_symlinks()
        self.metadata = MetadataStore(os.path.join(plant_dir, "meta.lmdb"), durable)
        try:
            self.lease = Lease(plant_dir)
        except BaseException:
            self.metadata.close()
            raise
        self.blobs = BlobStore(plant_dir, durable, hold=self.lease.hold)
        self.ingredientSpecs: dict[str, IngredientTypeSpec] = {}
        self.register_ingredient_specs([HdfArraySpec(), ScipySparseSpec()])

    def _warn_about_symlinks(self) -> None:
        for top in locations.TOPS:
            path = os.path.join(self.plantDir, top)
            if not self.paths.is_inside(os.path.join(path, "x")):
                self.logger.warning("%s is a symlink to %s, outside the plant directory: pyplant "
                                    "never reads, writes or collects through it; versions stored "
                                    "there are recomputed, and storing fails until it is replaced "
                                    "by a directory", path, os.path.realpath(path))

    # --- specs and types ---

    def register_ingredient_specs(self, specs: Iterable[IngredientTypeSpec]) -> None:
        """Register spec instances (replacing earlier ones of the same name); any time."""
        for spec in specs:
            if isinstance(spec, type):
                spec = spec()
            self.ingredientSpecs[spec.get_name()] = spec

    def infer_type(self, value: Any) -> str:
        kind = type(value)
        if kind in SIMPLE_TYPES:
            return "simple"
        if kind is list:
            return "list"
        if kind in NPY_TYPES and value.dtype.kind not in "OV" and not value.dtype.hasobject:
            return "array"
        for name, spec in self.ingredientSpecs.items():
            if spec.is_instance(value):
                return name
        return "object"

    def check_type(self, key: str) -> None:
        if key not in BUILTIN_TYPES and key not in self.ingredientSpecs:
            raise AllocationError(f"unknown ingredient type '{key}'; register its spec with "
                                  f"plant.warehouse.register_ingredient_specs([...])")

    # --- writing ---

    def storage_name(self, ingredient: str, temp: bool = False) -> str:
        """A file-system-safe name unique to one version of ``ingredient``."""
        return locations.storage_name(ingredient, temp)

    def store(self, name: str, value: Any, key: str, allocated: str | None = None,
              reactor: str | None = None) -> Stored:
        """Write ``value`` as a pending version of ``name`` with type ``key``.

        ``allocated`` is the storage location from ``allocate`` (files and allocatable specs).
        An ``ndarray`` subclass other than ``memmap`` sent as an array is pickled (type
        ``object``), so that its type and extra state (a mask) survive.

        Raises
        ------
        SerializationError
            when neither pickle nor dill can store the value.
        WarehouseError
            when the disk refuses the write (full, read-only), or a location would leave the
            plant directory (a symlink out of it).
        """
        try:
            if key == "array":
                if isinstance(value, np.ndarray) and type(value) not in NPY_TYPES:
                    return self._store_pickled(name, value, "object")
                value = np.asarray(value)
                if value.dtype.hasobject:  # .npy cannot hold objects without pickle
                    return self._store_pickled(name, value, "object")
                return self._store_array(name, value)
            if key == "file":
                return self._store_file(name, value, allocated)
            if key in BUILTIN_TYPES:
                return self._store_pickled(name, value, key)
            return self._store_spec(name, value, key, allocated)
        except SerializationError as exc:
            raise SerializationError(f"reactor '{reactor}' sent {exc}", reactor=reactor,
                                     ingredient=name) from exc.__cause__
        except (OSError, LocationError) as exc:
            raise WarehouseError(f"reactor '{reactor}' cannot store ingredient '{name}': {exc}",
                                 reactor=reactor, ingredient=name) from exc

    def _store_array(self, name: str, value: np.ndarray) -> Stored:
        content_hash, location = self.blobs.put_array(value)
        version = Version(name, "array", content_hash, location, nbytes=int(value.nbytes))
        return Stored(version, self.blobs.get_array(location))

    def _store_pickled(self, name: str, value: Any, key: str) -> Stored:
        data, codec = _serialize(name, value)
        content_hash = hashing.bytes_hash(data, "pickle")
        meta = {"codec": codec}
        if len(data) <= INLINE_MAX_BYTES:
            version = Version(name, key, content_hash, None, data, meta, len(data))
        else:
            location = self.blobs.put_bytes(content_hash, data)
            version = Version(name, key, content_hash, location, None, meta, len(data))
        return Stored(version, value)

    def _store_file(self, name: str, path: Any, allocated: str | None) -> Stored:
        path = os.fspath(path)
        if allocated is None or os.path.realpath(path) != os.path.realpath(self.paths.path_of(allocated)):
            basename = os.path.basename(path)
            if basename in ("", ".", ".."):
                basename = locations.default_basename(name)
            allocated = locations.file_location(self.storage_name(name), basename)
            self.lease.hold(allocated)
            shutil.copyfile(path, self.paths.path_for_write(allocated))
        locations.check(allocated, "file")
        target = self.paths.path_of(allocated)
        if not os.path.isfile(target):
            raise WarehouseError(f"file ingredient '{name}' was allocated but its file {target} "
                                 f"does not exist", ingredient=name)
        if self.durable:
            _fsync_file(target)
            fsync_dir(os.path.dirname(target))
            fsync_dir(os.path.dirname(os.path.dirname(target)))
        content_hash = hashing.digest("file", os.path.basename(target), hashing.file_hash(target))
        version = Version(name, "file", content_hash, allocated, nbytes=os.path.getsize(target))
        return Stored(version, target)

    def _store_spec(self, name: str, value: Any, key: str, allocated: str | None) -> Stored:
        spec = self.ingredientSpecs[key]
        storage = allocated or self.storage_name(name)
        self.lease.hold(storage)
        self._spec_dir_inside(storage)
        meta = spec.store(self, storage, value)
        hasher = getattr(spec, "content_hash", None)
        # Without a content hash the storage name (unique per version) stands for it.
        content_hash = hasher(value) if callable(hasher) else hashing.digest("storage", storage)
        version = Version(name, key, content_hash, storage, meta=meta)
        if self.durable:
            self._fsync_spec(storage)
        if isinstance(spec, HdfArraySpec):  # closed by store; consumers get a read-only handle
            value = spec.fetch(self, storage, meta)
        return Stored(version, value)

    def _spec_dir_inside(self, storage: str) -> None:
        """Refuse a spec storage whose ``specs/`` directory leads out of the plant."""
        locations.check(storage, "spec")
        self.paths.path_for_write(f"specs/{storage}")

    def _spec_files(self, storage: str) -> list[str]:
        """The files a spec wrote for ``storage`` (``specs/<storage>*``), as locations."""
        own = f"specs/{storage}"
        try:
            names = os.listdir(self.baseDir)
        except OSError:
            return []
        return [f"specs/{n}" for n in names if locations.owner(f"specs/{n}") == own]

    def _fsync_spec(self, storage: str) -> None:
        for location in self._spec_files(storage):
            path = self.paths.path_of(location)
            if os.path.isfile(path):
                _fsync_file(path)
        fsync_dir(self.baseDir)

    def allocate(self, name: str, key: str, temp: bool = False, **kwargs: Any) -> tuple[Any, str]:
        """Create a value to fill in place; returns (value, storage location).

        A file is created at ``files/<storage>/<filename>``; ``filename`` (optional) must be one
        plain file name.

        Raises
        ------
        AllocationError
            for types that cannot be allocated, bad arguments (shape, dtype), or a
            ``filename`` that is not one plain file name.
        WarehouseError
            when the disk refuses, or the storage directory leads out of the plant directory.
        """
        self.check_type(key)
        storage = self.storage_name(name, temp)
        try:
            if key == "file":
                return self._allocate_file(name, storage, kwargs.get("filename"))
            spec = self.ingredientSpecs.get(key)
            if spec is None or not getattr(spec, "isAllocatable", False):
                raise AllocationError(f"ingredient '{name}' of type '{key}' cannot be allocated; "
                                      f"send it instead", ingredient=name)
            self.lease.hold(storage)
            self._spec_dir_inside(storage)
            return spec.allocate(self, storage, **kwargs), storage
        except (OSError, LocationError) as exc:
            raise WarehouseError(f"cannot allocate ingredient '{name}': {exc}", ingredient=name) from exc

    def _allocate_file(self, name: str, storage: str, filename: Any) -> tuple[str, str]:
        try:
            basename = locations.default_basename(name) if filename is None else \
                locations.check_basename(filename)
        except LocationError as exc:
            raise AllocationError(f"ingredient '{name}': bad filename: {exc}", ingredient=name) from exc
        location = locations.file_location(storage, basename)
        self.lease.hold(location)
        path = self.paths.path_for_write(location)
        open(path, "wb").close()
        return path, location

    def deallocate(self, key: str, storage: str) -> None:
        """Free a temp allocation or the leftovers of a failed reactor: only what
        ``locations`` derives for it (a file ingredient's own directory, a spec's storage);
        never follows a symlink."""
        try:
            if key == "file":
                own = locations.owner(locations.check(storage, "file"))
                _remove_tree(self.paths.lexical(own))
                return
            spec = self.ingredientSpecs.get(key)
            locations.check(storage, "spec")
            if spec is not None and getattr(spec, "isAllocatable", False):
                spec.deallocate(self, storage)
            else:
                for location in self._spec_files(storage):
                    _remove_tree(self.paths.lexical(location))
        except Exception as exc:  # freeing must never hide the error that led here
            self.logger.warning("could not free ingredient storage %s: %s", storage, exc)

    def free(self, version: Version) -> None:
        """Remove the per-version storage of a version whose reactor failed (files, specs);
        content-addressed blobs are left to GC (another version may share them)."""
        if version.location and version.type not in BUILTIN_TYPES - {"file"}:
            self.deallocate(version.type, version.location)

    # --- reading ---

    def load(self, version: Version) -> Any:
        """Load a stored version; its location is recorded in the plant's lease first.

        Raises
        ------
        CorruptVersionError
            when its file is missing, cannot be decoded, or its location is not one the
            warehouse makes (tampered metadata, a symlink leading out of the plant directory);
            the caller recomputes it.
        """
        try:
            self.lease.hold(version.location)
            value = self._load(version)
            self._verify(version, value)
        except CorruptVersionError:
            raise
        except Exception as exc:
            raise CorruptVersionError(f"ingredient '{version.name}' cannot be loaded from "
                                      f"{version.location or 'the metadata'}: {type(exc).__name__}: {exc}",
                                      ingredient=version.name) from exc
        return value

    def _load(self, version: Version) -> Any:
        if version.location is not None or version.type not in BUILTIN_TYPES:
            locations.check(version.location, version.type)
        if version.type == "array":
            return self.blobs.get_array(version.location)
        if version.type == "file":
            path = self.paths.path_of(version.location)
            if not os.path.isfile(path):
                raise CorruptVersionError(f"file ingredient '{version.name}' is missing: {path}",
                                          ingredient=version.name)
            return path
        if version.type in BUILTIN_TYPES:
            data = version.inline if version.inline is not None else self.blobs.get_bytes(version.location)
            if hashing.bytes_hash(data, "pickle") != version.content_hash:  # never unpickle damage
                raise CorruptVersionError(f"ingredient '{version.name}': stored bytes do not match "
                                          f"their content hash", ingredient=version.name)
            return _deserialize(data, (version.meta or {}).get("codec", "pickle"))
        spec = self.ingredientSpecs.get(version.type)
        if spec is None:
            raise CorruptVersionError(f"ingredient '{version.name}' was stored with spec '{version.type}', "
                                      f"which is not registered; call plant.warehouse."
                                      f"register_ingredient_specs([...])", ingredient=version.name)
        self.paths.path_of(f"specs/{version.location}")  # specs/ must not lead out of the plant
        value = spec.fetch(self, version.location, version.meta)
        if value is None:
            raise CorruptVersionError(f"spec '{version.type}' found no stored value for "
                                      f"ingredient '{version.name}'", ingredient=version.name)
        return value

    @property
    def closed(self) -> bool:
        return self._closed

    def discard(self, version: Version) -> None:
        """Remove the damaged file of a version, so that recomputing it writes it afresh
        (a content-addressed blob would otherwise be reused as it is). A symlink is removed
        itself, never its target."""
        if version.location and version.type in BUILTIN_TYPES - {"file"}:
            try:
                os.remove(self.paths.lexical(locations.check(version.location, version.type)))
            except (OSError, ValueError):
                pass

    def _verify(self, version: Version, value: Any) -> None:
        """Check a loaded value against its content hash, or its size when it is huge."""
        if version.type == "array":
            ok = (hashing.array_hash(value) == version.content_hash if version.nbytes <= VERIFY_MAX_BYTES
                  else value.nbytes == version.nbytes)
        elif version.type == "file":
            ok = os.path.getsize(value) == version.nbytes and (
                version.nbytes > VERIFY_MAX_BYTES or hashing.digest(
                    "file", os.path.basename(value), hashing.file_hash(value)) == version.content_hash)
        elif version.type == "hdf_array":
            meta = version.meta or {}
            ok = list(value.shape) == meta.get("shape", list(value.shape)) and \
                value.dtype.str == meta.get("dtype", value.dtype.str)
        else:
            hasher = getattr(self.ingredientSpecs.get(version.type), "content_hash", None)
            ok = not callable(hasher) or hasher(value) == version.content_hash
        if not ok:
            raise CorruptVersionError(f"ingredient '{version.name}' is damaged on disk: it does not "
                                      f"match its content hash ({version.location})", ingredient=version.name)

    def close(self) -> None:
        """Close spec handles, the lease and the metadata environment; idempotent, and
        completes when called again after an interrupt landed inside it."""
        self._closed = True
        try:
            for spec in list(self.ingredientSpecs.values()):
                try:
                    spec.close()
                except Exception as exc:
                    self.logger.warning("spec %s failed to close: %s", spec.get_name(), exc)
        finally:
            try:
                self.lease.release()
            finally:
                self.metadata.close()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: str) -> None:
    """Remove a file, a symlink (not its target) or a directory tree (symlinks inside are
    removed, not followed)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _serialize(name: str, value: Any) -> tuple[bytes, str]:
    try:
        return pickle.dumps(value, protocol=5), "pickle"
    except Exception as first:
        try:
            return dill.dumps(value, protocol=5), "dill"
        except Exception as exc:
            raise SerializationError(
                f"ingredient '{name}' of type {type(value).__qualname__} can be stored neither with "
                f"pickle ({first}) nor with dill ({exc})", ingredient=name) from exc


def _deserialize(data: bytes, codec: str) -> Any:
    return dill.loads(data) if codec == "dill" else pickle.loads(data)
