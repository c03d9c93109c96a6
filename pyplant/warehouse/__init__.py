"""The warehouse: every version of every ingredient, on disk.

=================  ==========================================================================
simple/list/object pickled (protocol 5; dill for lambdas and closures); inline in the LMDB
                   record below 64 KiB, else a content-addressed ``.pkl`` blob
array              content-addressed ``.npy`` blob; loaded read-only, memory-mapped
file               ``files/<ingredient>@<token>/<basename>``, hashed when the reactor ends
spec types         the spec writes ``specs/<ingredient>@<token>.*``
=================  ==========================================================================

A value is written when it is sent; the version becomes visible only when its reactor finishes
and the metadata transaction naming it commits (see ``metadata.py``). A crash in between leaves
an unreferenced file, never a reference to a missing one.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import dill
import numpy as np

from .. import hashing
from ..errors import AllocationError, CorruptVersionError, SerializationError, WarehouseError
from ..ingredient import BUILTIN_TYPES, SIMPLE_TYPES
from .metadata import MetadataStore, Trace, Version
from .specs import HdfArraySpec, IngredientTypeSpec, ScipySparseSpec
from .store import BlobStore, inside

logger = logging.getLogger(__name__)

INLINE_MAX_BYTES = 1 << 16
# Versions up to this size are verified against their content hash on their first load by a
# plant; larger arrays and files get a size check (hashing them would cost a pass over disk).
VERIFY_MAX_BYTES = 64 << 20
_STORAGE_NAME = re.compile(r"^(temp-)?[A-Za-z0-9._-]*@[0-9a-f]{16}$")

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
        os.makedirs(self.baseDir, exist_ok=True)
        os.makedirs(os.path.join(plant_dir, "files"), exist_ok=True)
        self.metadata = MetadataStore(os.path.join(plant_dir, "meta.lmdb"), durable)
        self.blobs = BlobStore(plant_dir, durable)
        self.ingredientSpecs: dict[str, IngredientTypeSpec] = {}
        self.register_ingredient_specs([HdfArraySpec(), ScipySparseSpec()])
        self._closed = False

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
        if isinstance(value, np.ndarray) and value.dtype.kind not in "OV" and not value.dtype.hasobject:
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

    def storage_name(self, ingredient: str) -> str:
        """A file-system-safe name unique to one version of ``ingredient``."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", ingredient)[:80]
        return f"{safe}@{uuid.uuid4().hex[:16]}"

    def store(self, name: str, value: Any, key: str, allocated: str | None = None,
              reactor: str | None = None) -> Stored:
        """Write ``value`` as a pending version of ``name`` with type ``key``.

        ``allocated`` is the storage name from ``allocate`` (files and allocatable specs).

        Raises
        ------
        SerializationError
            when neither pickle nor dill can store the value.
        WarehouseError
            when the disk refuses the write (full, read-only).
        """
        try:
            if key == "array":
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
        except OSError as exc:
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
        if allocated is None or os.path.abspath(path) != os.path.abspath(self._abspath(allocated)):
            allocated = self._file_location(self.storage_name(name), os.path.basename(path))
            target = self._abspath(allocated)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
        target = self._abspath(allocated)
        if not os.path.exists(target):
            raise WarehouseError(f"file ingredient '{name}' was allocated but its file {target} "
                                 f"does not exist", ingredient=name)
        content_hash = hashing.digest("file", os.path.basename(target), hashing.file_hash(target))
        version = Version(name, "file", content_hash, allocated, nbytes=os.path.getsize(target))
        return Stored(version, target)

    def _store_spec(self, name: str, value: Any, key: str, allocated: str | None) -> Stored:
        spec = self.ingredientSpecs[key]
        storage = allocated or self.storage_name(name)
        meta = spec.store(self, storage, value)
        hasher = getattr(spec, "content_hash", None)
        # Without a content hash the storage name (unique per version) stands for it.
        content_hash = hasher(value) if callable(hasher) else hashing.digest("storage", storage)
        version = Version(name, key, content_hash, storage, meta=meta)
        if isinstance(spec, HdfArraySpec):  # closed by store; consumers get a read-only handle
            value = spec.fetch(self, storage, meta)
        return Stored(version, value)

    def allocate(self, name: str, key: str, temp: bool = False, **kwargs: Any) -> tuple[Any, str]:
        """Create a value to fill in place; returns (value, storage name).

        Raises
        ------
        AllocationError
            for types that cannot be allocated, or bad arguments (shape, dtype).
        """
        self.check_type(key)
        storage = ("temp-" if temp else "") + self.storage_name(name)
        if key == "file":
            location = self._file_location(storage, kwargs.get("filename") or os.path.basename(name))
            path = self._abspath(location)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
            return path, location
        spec = self.ingredientSpecs.get(key)
        if spec is None or not getattr(spec, "isAllocatable", False):
            raise AllocationError(f"ingredient '{name}' of type '{key}' cannot be allocated; "
                                  f"send it instead", ingredient=name)
        return spec.allocate(self, storage, **kwargs), storage

    def deallocate(self, key: str, storage: str) -> None:
        """Free a temp allocation or the leftovers of a failed reactor."""
        if key == "file":
            shutil.rmtree(os.path.dirname(self._abspath(storage)), ignore_errors=True)
            return
        spec = self.ingredientSpecs.get(key)
        try:
            spec.deallocate(self, storage)
        except Exception as exc:  # freeing must never hide the error that led here
            self.logger.warning("could not free temp ingredient storage %s: %s", storage, exc)

    def _file_location(self, storage: str, basename: str) -> str:
        return os.path.join("files", storage, basename or "file")

    def _abspath(self, location: str) -> str:
        return inside(self.plantDir, location)

    # --- reading ---

    def load(self, version: Version) -> Any:
        """Load a stored version.

        Raises
        ------
        CorruptVersionError
            when its file is missing or cannot be decoded; the caller recomputes it.
        """
        try:
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
        if version.type == "array":
            return self.blobs.get_array(version.location)
        if version.type == "file":
            path = self._abspath(version.location)
            if not os.path.exists(path):
                raise CorruptVersionError(f"file ingredient '{version.name}' is missing: {path}",
                                          ingredient=version.name)
            return path
        if version.type in BUILTIN_TYPES:
            data = version.inline if version.inline is not None else self.blobs.get_bytes(version.location)
            if hashing.bytes_hash(data, "pickle") != version.content_hash:  # never unpickle damage
                raise CorruptVersionError(f"ingredient '{version.name}': stored bytes do not match "
                                          f"their content hash", ingredient=version.name)
            return _deserialize(data, (version.meta or {}).get("codec", "pickle"))
        if not _STORAGE_NAME.match(version.location or ""):
            raise CorruptVersionError(f"ingredient '{version.name}': bad storage name "
                                      f"{version.location!r}", ingredient=version.name)
        spec = self.ingredientSpecs.get(version.type)
        if spec is None:
            raise CorruptVersionError(f"ingredient '{version.name}' was stored with spec '{version.type}', "
                                      f"which is not registered; call plant.warehouse."
                                      f"register_ingredient_specs([...])", ingredient=version.name)
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
        (a content-addressed blob would otherwise be reused as it is)."""
        if version.location and version.type in BUILTIN_TYPES:
            try:
                os.remove(self._abspath(version.location))
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
        """Close spec handles and the metadata environment; idempotent."""
        if self._closed:
            return
        self._closed = True
        for spec in self.ingredientSpecs.values():
            try:
                spec.close()
            except Exception as exc:
                self.logger.warning("spec %s failed to close: %s", spec.get_name(), exc)
        self.metadata.close()


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
