"""The spec adapter: an ``IngredientTypeSpec`` (HDF, SciPy sparse, Keras, yours) as a codec.

See ``specs.py`` for the spec interface and ``codecs.py`` for the codec protocol.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from .. import hashing
from ..errors import PyPlantError, SpecError
from . import locations
from .codecs import VERIFY_MAX_BYTES, Codec, Stored, damaged, fsync_file, remove_tree, spec_call
from .locations import LocationError
from .records import Version
from .store import fsync_dir

if TYPE_CHECKING:
    from . import Warehouse

__all__ = ["SpecCodec", "spec_files"]


class SpecCodec(Codec):
    """An ``IngredientTypeSpec`` as a codec: the spec writes ``specs/<storage>*`` under a
    storage name unique to the version (``<ingredient>@<16 hex>``), and fetches it back.

    Besides the spec's own ``content_hash`` (optional; without it the storage name stands for
    the content, so no early cutoff) and ``verify``, the codec records the size of every file
    the spec wrote and the hash of those up to ``VERIFY_MAX_BYTES`` (``Version.files``), and
    checks them before ``fetch``: a missing, truncated or altered file is damage
    (``CorruptVersionError``); an exception ``fetch`` raises on intact files is a bug in the
    spec (``SpecError``), or the operating system refusing (an ``OSError``, passed on). For a
    version stored before files were recorded, a failing ``fetch`` counts as damage.

    Parameters
    ----------
    spec : IngredientTypeSpec
        The spec; its ``get_name()`` is the key.
    """

    location_kind = "spec"

    def __init__(self, spec: Any):
        self.spec = spec
        self.key = spec.get_name()
        self.allocatable = bool(getattr(spec, "isAllocatable", False))

    def _call(self, ingredient: str | None, what: str, call: Callable[[], Any]) -> Any:
        return spec_call(self.key, ingredient, what, call)

    def accepts(self, value: Any) -> bool:
        return bool(self._call(None, "is_instance", lambda: self.spec.is_instance(value)))

    def store(self, warehouse: "Warehouse", name: str, value: Any, allocated: str | None) -> Stored:
        storage = allocated or locations.storage_name(name)
        warehouse.hold(storage)
        spec_dir_inside(warehouse, storage)
        try:
            return self._store(warehouse, name, value, storage)
        except BaseException:
            if allocated is None:  # what the failed store wrote; an allocation is freed by its reactor
                self._remove(warehouse, storage)
            raise

    def _store(self, warehouse: "Warehouse", name: str, value: Any, storage: str) -> Stored:
        meta = self._call(name, "store", lambda: self.spec.store(warehouse, storage, value))
        content_hash = self._hash(value, name) or hashing.digest("storage", storage)
        files = fingerprint(warehouse, storage)
        if warehouse.durable:
            for location in files:
                fsync_file(warehouse.paths.path_of(location))
            fsync_dir(warehouse.baseDir)
        version = Version(name, self.key, content_hash, storage, meta=meta,
                          nbytes=sum(size for size, _ in files.values()), files=files)
        received = getattr(self.spec, "stored_value", None)
        if callable(received):
            value = self._call(name, "stored_value", lambda: received(warehouse, storage, value, meta))
        return Stored(version, value)

    def _remove(self, warehouse: "Warehouse", storage: str) -> None:
        try:
            self.deallocate(warehouse, storage)
        except Exception as exc:  # the store's own error matters more
            warehouse.logger.warning("could not free ingredient storage %s: %s", storage, exc)

    def load(self, warehouse: "Warehouse", version: Version) -> Any:
        warehouse.paths.path_of(f"specs/{version.location}")  # specs/ must not lead out of the plant
        if version.files is not None:
            check_files(warehouse, version)
        try:
            value = self.spec.fetch(warehouse, version.location, version.meta)
        except (PyPlantError, OSError):
            raise
        except Exception as exc:
            if version.files is None:  # nothing recorded to tell damage from a bug: recompute
                raise damaged(version, f"cannot be loaded by spec '{self.key}': "
                                       f"{type(exc).__name__}: {exc}") from exc
            raise SpecError(f"spec '{self.key}' raised in fetch for ingredient '{version.name}' "
                            f"(its files are intact): {type(exc).__name__}: {exc}", spec=self.key,
                            ingredient=version.name, version=version) from exc
        if value is None:
            raise damaged(version, f"has no stored value: spec '{self.key}' found no stored value "
                                   f"under {version.location}")
        return value

    def verify(self, warehouse: "Warehouse", version: Version, value: Any) -> None:
        check = getattr(self.spec, "verify", None)
        ok = self._call(version.name, "verify", lambda: check(value, version.meta)) if callable(check) \
            else True
        expected = self._hash(value, version.name)
        if not ok or (expected is not None and expected != version.content_hash):
            raise damaged(version, f"is damaged on disk: it does not match its content hash "
                                   f"({version.location})")

    def _hash(self, value: Any, ingredient: str | None) -> str | None:
        hasher = getattr(self.spec, "content_hash", None)
        return self._call(ingredient, "content_hash", lambda: hasher(value)) if callable(hasher) else None

    def content_hash(self, value: Any) -> str | None:
        return self._hash(value, None)

    def discard(self, warehouse: "Warehouse", version: Version) -> None:
        """Nothing: the recomputed version gets a storage name of its own; GC sweeps this one."""

    def allocate(self, warehouse: "Warehouse", name: str, storage: str, **kwargs: Any) -> tuple[Any, str]:
        if not self.allocatable:
            return super().allocate(warehouse, name, storage, **kwargs)
        warehouse.hold(storage)
        spec_dir_inside(warehouse, storage)
        return self._call(name, "allocate", lambda: self.spec.allocate(warehouse, storage, **kwargs)), storage

    def deallocate(self, warehouse: "Warehouse", storage: str) -> None:
        locations.check(storage, "spec")
        if self.allocatable:
            self._call(None, "deallocate", lambda: self.spec.deallocate(warehouse, storage))
            return
        for location in spec_files(warehouse, storage):
            remove_tree(warehouse.paths.lexical(location))

    def close(self) -> None:
        self._call(None, "close", self.spec.close)


def spec_dir_inside(warehouse: "Warehouse", storage: str) -> None:
    """Refuse a spec storage whose ``specs/`` directory leads out of the plant
    (``LocationError``)."""
    locations.check(storage, "spec")
    warehouse.paths.path_for_write(f"specs/{storage}")


def spec_files(warehouse: "Warehouse", storage: str) -> list[str]:
    """The entries a spec wrote for ``storage`` (``specs/<storage>*``), as locations."""
    own = f"specs/{storage}"
    try:
        names = os.listdir(warehouse.baseDir)
    except OSError:
        return []
    return sorted(f"specs/{n}" for n in names if locations.owner(f"specs/{n}") == own)


def fingerprint(warehouse: "Warehouse", storage: str) -> dict[str, list]:
    """``{location: [size in bytes, content hash or None]}`` of every regular file a spec
    wrote for ``storage`` (in directories too; symlinks are not followed); hashed up to
    ``VERIFY_MAX_BYTES``."""
    found: dict[str, list] = {}
    for location in spec_files(warehouse, storage):
        path = warehouse.paths.lexical(location)
        if os.path.isdir(path) and not os.path.islink(path):
            walked = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        else:
            walked = [path]
        for file in walked:
            if os.path.isfile(file) and not os.path.islink(file):
                size = os.path.getsize(file)
                rel = os.path.relpath(file, warehouse.paths.path).replace(os.sep, "/")
                found[rel] = [size, hashing.file_hash(file) if size <= VERIFY_MAX_BYTES else None]
    return found


def check_files(warehouse: "Warehouse", version: Version) -> None:
    """Raise ``CorruptVersionError`` when a file recorded in ``version.files`` is missing, has
    another size, or (when its hash was recorded) another content, or is not the version's own."""
    own = f"specs/{version.location}"
    for location, entry in version.files.items():
        if locations.owner(location) != own or not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise damaged(version, f"records a file {location!r} that is not its own")
        try:
            path = warehouse.paths.path_of(location)
            size = os.stat(path).st_size
        except (OSError, LocationError) as exc:
            raise damaged(version, f"is missing its file {location}: {exc}") from exc
        if size != entry[0]:
            raise damaged(version, f"is damaged on disk: {location} has {size} bytes, not {entry[0]}")
        if entry[1] is not None and hashing.file_hash(path) != entry[1]:
            raise damaged(version, f"is damaged on disk: {location} does not match its content hash")
