"""Codecs: how each ingredient type is recognized, stored, loaded, verified and discarded.

Every type the warehouse knows is one ``Codec`` registered under its type key (the key recorded
in ``Version.type``); the warehouse dispatches through that registry and knows no type by name.

=================  ======================  ==================================================
key                codec                   storage
=================  ======================  ==================================================
simple/list/object ``PickleCodec``         pickle protocol 5 (dill for lambdas and closures);
                                           inline in the record below 64 KiB, else a
                                           content-addressed ``.pkl`` blob
array              ``ArrayCodec``          content-addressed ``.npy`` blob, loaded read-only,
                                           memory-mapped from 1 MiB on; exactly ``np.ndarray``
                                           and ``np.memmap`` (other subclasses are pickled)
file               ``FileCodec``           ``files/<storage>/<basename>``
a spec's name      ``SpecCodec``           what the ``IngredientTypeSpec`` writes under
                                           ``specs/<storage>*`` (HDF, SciPy sparse, Keras, yours)
yours              a ``Codec`` subclass    ``BytesCodec`` does the storing: write ``encode``
                                           and ``decode``
=================  ======================  ==================================================

Adding a type is one class and one registration: subclass ``BytesCodec`` (or ``Codec`` for
storage of your own) and call ``plant.warehouse.register_codecs([MyCodec()])``; see
``docs/codecs.md``.

What is damage: a codec raises ``CorruptVersionError`` only when the stored bytes are missing,
truncated, altered (they do not match the recorded content hash or size) or cannot be decoded
by the built-in formats; the plant then recomputes the version. An exception raised by a
spec's or a custom codec's own code on intact storage is a bug, and propagates as
``SpecError`` naming it and the ingredient (the original exception as ``__cause__``).
"""
from __future__ import annotations

import abc
import os
import pickle
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import dill
import numpy as np

from .. import hashing
from ..errors import (AllocationError, CorruptVersionError, IngredientTypeError, PyPlantError,
                      SerializationError, SpecError, WarehouseError)
from ..ingredient import SIMPLE_TYPES
from . import locations
from .locations import LocationError
from .records import Version
from .store import fsync_dir

if TYPE_CHECKING:
    from . import Warehouse

__all__ = ["Codec", "BytesCodec", "PickleCodec", "ArrayCodec", "FileCodec", "Registry", "Stored",
           "INLINE_MAX_BYTES", "VERIFY_MAX_BYTES", "NPY_TYPES", "builtin_registry"]

INLINE_MAX_BYTES = 1 << 16
# Versions up to this size are verified against their content hash on their first load by a
# plant; larger arrays and files get a size check (hashing them would cost a pass over disk).
VERIFY_MAX_BYTES = 64 << 20
# Array types stored as .npy; a memmap is received as a read-only ndarray.
NPY_TYPES = (np.ndarray, np.memmap)


@dataclass
class Stored:
    """A value written by ``Warehouse.store``, waiting for its reactor to finish.

    Attributes
    ----------
    version : Version
        The version to commit with the reactor's trace.
    value : Any
        What consumers in this session receive (for arrays: the read-only stored array).
    """
    version: Version
    value: Any


def damaged(version: Version, why: str) -> CorruptVersionError:
    """The ``CorruptVersionError`` of ``version``: the message names the ingredient and ``why``."""
    return CorruptVersionError(f"ingredient '{version.name}' {why}", ingredient=version.name,
                               version=version, path=version.location)


class Codec(abc.ABC):
    """One ingredient type: the extension point of the warehouse.

    Subclasses set ``key`` (stored in every ``Version.type``: never change it once versions
    exist) and implement ``store`` and ``load``; the other methods have working defaults.

    Attributes
    ----------
    key : str
        The type key; also what ``pipe.send(name, value, key)`` names it by.
    location_kind : str
        What ``Version.location`` is: ``'blob'`` (``blobs/ab/<hash>.<sfx>``, shared by equal
        content), ``'file'`` (``files/<storage>/<name>``) or ``'spec'`` (a storage name);
        a location of another kind is refused as tampered metadata.
    allocatable : bool
        True when ``allocate`` creates a value to fill in place.
    """

    key: str = ""
    location_kind: str = "blob"
    allocatable: bool = False

    def accepts(self, value: Any) -> bool:
        """True when a value sent without a type should be stored with this codec.

        Parameters
        ----------
        value : Any
            The sent value.

        Returns
        -------
        bool
            False by default: the codec is used only when named.
        """
        return False

    @abc.abstractmethod
    def store(self, warehouse: "Warehouse", name: str, value: Any, allocated: str | None) -> Stored:
        """Write ``value`` as a new version of ingredient ``name``.

        Parameters
        ----------
        warehouse : Warehouse
            Gives ``blobs`` (a ``BlobBackend``), ``paths`` (``locations.Root``), ``hold``
            (record a location in the lease before writing it), ``durable`` and ``baseDir``.
        name : str
            The ingredient's name.
        value : Any
            What the reactor sent.
        allocated : str or None
            The storage location ``allocate`` returned for it, if it was allocated.

        Returns
        -------
        Stored
            The version (with its content hash, location and size in bytes) and the value
            consumers in this session receive.

        Raises
        ------
        SerializationError
            when the value cannot be encoded.
        OSError, LocationError
            when the disk refuses (the warehouse raises ``WarehouseError``).
        """

    @abc.abstractmethod
    def load(self, warehouse: "Warehouse", version: Version) -> Any:
        """Read a stored version (its location is already checked and held).

        Returns
        -------
        Any
            The value.

        Raises
        ------
        CorruptVersionError
            when it is missing, truncated or cannot be decoded.
        SpecError
            when the codec's own code fails on intact storage.
        """

    def verify(self, warehouse: "Warehouse", version: Version, value: Any) -> None:
        """Check a loaded value against what was recorded (content hash, size); nothing by
        default.

        Raises
        ------
        CorruptVersionError
            when it does not match.
        """

    def content_hash(self, value: Any) -> str | None:
        """The content hash (32 hex digits) of a value, or None when the codec has none (its
        versions are then keyed by their storage name: no early cutoff)."""
        return None

    def discard(self, warehouse: "Warehouse", version: Version) -> None:
        """Remove the damaged storage of ``version`` so that recomputing it writes afresh (a
        content-addressed blob would otherwise be reused as it is). By default a blob is
        removed (a symlink itself, never its target); per-version storage is left to GC."""
        if version.location and self.location_kind == "blob":
            try:
                os.remove(warehouse.paths.lexical(locations.check(version.location, "blob")))
            except (OSError, ValueError):
                pass

    def allocate(self, warehouse: "Warehouse", name: str, storage: str, **kwargs: Any) -> tuple[Any, str]:
        """Create a value to fill in place, in the version's own storage.

        Parameters
        ----------
        name : str
            The ingredient's name.
        storage : str
            A storage name unique to this version (``locations.storage_name``).
        **kwargs
            Type-specific arguments (``shape``, ``dtype``, ``filename``).

        Returns
        -------
        (Any, str)
            The value and its storage location (passed back to ``store`` as ``allocated``).

        Raises
        ------
        AllocationError
            for a type that cannot be allocated (the default) or bad arguments.
        """
        raise AllocationError(f"ingredient '{name}' of type '{self.key}' cannot be allocated; "
                              f"send it instead", ingredient=name)

    def deallocate(self, warehouse: "Warehouse", storage: str) -> None:
        """Remove what ``allocate`` (or ``store``) wrote for ``storage``; nothing by default.
        Errors are logged by the warehouse, never raised past it."""

    def free(self, warehouse: "Warehouse", version: Version) -> None:
        """Remove the per-version storage of a version whose reactor failed; content-addressed
        blobs are left to GC (another version may share them)."""
        if version.location and self.location_kind != "blob":
            self.deallocate(warehouse, version.location)

    def close(self) -> None:
        """Release handles (plant shutdown); nothing by default."""


class BytesCodec(Codec):
    """A codec for values encoded as bytes: inline in the record up to ``inline_max`` bytes,
    else a content-addressed blob ``blobs/ab/<hash><suffix>``. The content hash covers the
    encoded bytes (in the domain ``hash_domain``, the key by default), is checked before any
    decoding, and gives early cutoff when the encoding is deterministic.

    Subclasses set ``key`` (and ``suffix``: ``.`` and lowercase letters) and implement
    ``encode``, ``decode`` and, to be inferred, ``accepts``.
    """

    suffix = ".bin"
    inline_max = INLINE_MAX_BYTES
    hash_domain: str | None = None

    @abc.abstractmethod
    def encode(self, value: Any) -> tuple[bytes, dict | None]:
        """The bytes of ``value`` and what ``decode`` needs besides them (stored in
        ``Version.meta``; plain data only)."""

    @abc.abstractmethod
    def decode(self, data: bytes, meta: dict | None) -> Any:
        """The value of bytes written by ``encode`` (already checked against their hash)."""

    def decode_error(self, version: Version, exc: Exception) -> PyPlantError:
        """What a failing ``decode`` of intact bytes means: a bug in the codec (``SpecError``)."""
        return SpecError(f"codec '{self.key}' failed to decode ingredient '{version.name}': "
                         f"{type(exc).__name__}: {exc}", spec=self.key, ingredient=version.name,
                         version=version)

    def _domain(self) -> str:
        return self.hash_domain or self.key

    def store(self, warehouse: "Warehouse", name: str, value: Any, allocated: str | None) -> Stored:
        data, meta = self.encode(value)
        content_hash = hashing.bytes_hash(data, self._domain())
        if len(data) <= self.inline_max:
            return Stored(Version(name, self.key, content_hash, None, data, meta, len(data)), value)
        location = warehouse.blobs.put_bytes(content_hash, data, self.suffix)
        return Stored(Version(name, self.key, content_hash, location, None, meta, len(data)), value)

    def load(self, warehouse: "Warehouse", version: Version) -> Any:
        if version.inline is not None:
            data = version.inline
        else:
            try:
                data = warehouse.blobs.get_bytes(version.location)
            except OSError as exc:
                raise damaged(version, f"cannot be read from {version.location}: {exc}") from exc
        if hashing.bytes_hash(data, self._domain()) != version.content_hash:  # never decode damage
            raise damaged(version, "is damaged: its stored bytes do not match their content hash")
        try:
            return self.decode(data, version.meta)
        except Exception as exc:
            raise self.decode_error(version, exc) from exc

    def content_hash(self, value: Any) -> str | None:
        return hashing.bytes_hash(self.encode(value)[0], self._domain())


class PickleCodec(BytesCodec):
    """``simple``, ``list`` and ``object``: pickle protocol 5, or dill when pickle cannot (a
    lambda, a closure); ``Version.meta`` is ``{'codec': 'pickle' | 'dill'}``.

    Parameters
    ----------
    key : str
        ``'simple'`` (exactly int, float, complex, str, bool, bytes, None), ``'list'``
        (exactly ``list``) or ``'object'`` (anything; the fallback of inference).
    """

    suffix = ".pkl"
    hash_domain = "pickle"

    def __init__(self, key: str):
        self.key = key

    def accepts(self, value: Any) -> bool:
        kind = type(value)
        if self.key == "simple":
            return kind in SIMPLE_TYPES
        return kind is list if self.key == "list" else True

    def encode(self, value: Any) -> tuple[bytes, dict | None]:
        try:
            return pickle.dumps(value, protocol=5), {"codec": "pickle"}
        except Exception as first:
            try:
                return dill.dumps(value, protocol=5), {"codec": "dill"}
            except Exception as exc:
                raise SerializationError(
                    f"a value of type {type(value).__qualname__} can be stored neither with pickle "
                    f"({first}) nor with dill ({exc})") from exc

    def decode(self, data: bytes, meta: dict | None) -> Any:
        return dill.loads(data) if (meta or {}).get("codec") == "dill" else pickle.loads(data)

    def decode_error(self, version: Version, exc: Exception) -> PyPlantError:
        """Intact bytes that do not unpickle here (a class renamed or removed, a library
        changed) cannot be used: the version is recomputed."""
        return damaged(version, f"cannot be unpickled: {type(exc).__name__}: {exc}")


class ArrayCodec(Codec):
    """``array``: a content-addressed ``.npy`` blob. Received read-only; memory-mapped from
    ``store.MMAP_MIN_BYTES`` (1 MiB) on. A subclass other than ``np.memmap`` and an array of
    objects are stored by the ``object`` codec, so that their type and state survive."""

    key = "array"

    def __init__(self, fallback: Codec):
        self.fallback = fallback

    def accepts(self, value: Any) -> bool:
        return type(value) in NPY_TYPES and value.dtype.kind not in "OV" and not value.dtype.hasobject

    def store(self, warehouse: "Warehouse", name: str, value: Any, allocated: str | None) -> Stored:
        if isinstance(value, np.ndarray) and type(value) not in NPY_TYPES:
            return self.fallback.store(warehouse, name, value, allocated)
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists, odd array-likes
            raise SerializationError(f"a value of type {type(value).__qualname__} cannot be stored "
                                     f"as an array: {exc}") from exc
        if value.dtype.hasobject:  # .npy cannot hold objects without pickle
            return self.fallback.store(warehouse, name, value, allocated)
        content_hash, location = warehouse.blobs.put_array(value)
        version = Version(name, self.key, content_hash, location, nbytes=int(value.nbytes))
        return Stored(version, warehouse.blobs.get_array(location))

    def load(self, warehouse: "Warehouse", version: Version) -> Any:
        try:
            return warehouse.blobs.get_array(version.location)
        except (OSError, ValueError, EOFError) as exc:  # missing, truncated, not .npy, objects
            raise damaged(version, f"cannot be read from {version.location}: {type(exc).__name__}: "
                                   f"{exc}") from exc

    def verify(self, warehouse: "Warehouse", version: Version, value: Any) -> None:
        if version.nbytes <= VERIFY_MAX_BYTES:
            ok = hashing.array_hash(value) == version.content_hash
        else:
            ok = value.nbytes == version.nbytes
        if not ok:
            raise damaged(version, f"is damaged on disk: it does not match its content hash "
                                   f"({version.location})")

    def content_hash(self, value: Any) -> str | None:
        return hashing.array_hash(np.asarray(value))


class FileCodec(Codec):
    """``file``: a file in the version's own directory ``files/<storage>/<basename>``, passed
    as its path. Allocated (``pipe.allocate(name, Ingredient.Type.file, filename=...)``) or
    sent as the path of a file elsewhere, which is copied in. Hashed when stored."""

    key = "file"
    location_kind = "file"
    allocatable = True

    def store(self, warehouse: "Warehouse", name: str, value: Any, allocated: str | None) -> Stored:
        path = os.fspath(value)
        if allocated is None or os.path.realpath(path) != os.path.realpath(warehouse.paths.path_of(allocated)):
            basename = os.path.basename(path)
            if basename in ("", ".", ".."):
                basename = locations.default_basename(name)
            allocated = locations.file_location(locations.storage_name(name), basename)
            warehouse.hold(allocated)
            shutil.copyfile(path, warehouse.paths.path_for_write(allocated))
        locations.check(allocated, "file")
        target = warehouse.paths.path_of(allocated)
        if not os.path.isfile(target):
            raise WarehouseError(f"file ingredient '{name}' was allocated but its file {target} "
                                 f"does not exist", ingredient=name, path=target)
        if warehouse.durable:
            fsync_file(target)
            fsync_dir(os.path.dirname(target))
            fsync_dir(os.path.dirname(os.path.dirname(target)))
        version = Version(name, self.key, self._hash(target), allocated, nbytes=os.path.getsize(target))
        return Stored(version, target)

    @staticmethod
    def _hash(path: str) -> str:
        return hashing.digest("file", os.path.basename(path), hashing.file_hash(path))

    def load(self, warehouse: "Warehouse", version: Version) -> Any:
        path = warehouse.paths.path_of(version.location)
        if not os.path.isfile(path):
            raise damaged(version, f"is missing: {path}")
        return path

    def verify(self, warehouse: "Warehouse", version: Version, value: Any) -> None:
        try:
            ok = os.path.getsize(value) == version.nbytes and (
                version.nbytes > VERIFY_MAX_BYTES or self._hash(value) == version.content_hash)
        except OSError as exc:  # removed or unreadable meanwhile
            raise damaged(version, f"cannot be read: {exc}") from exc
        if not ok:
            raise damaged(version, f"is damaged on disk: it does not match its content hash "
                                   f"({version.location})")

    def discard(self, warehouse: "Warehouse", version: Version) -> None:
        """Nothing: the recomputed version gets a directory of its own; GC sweeps this one."""

    def allocate(self, warehouse: "Warehouse", name: str, storage: str, **kwargs: Any) -> tuple[Any, str]:
        filename = kwargs.get("filename")
        try:
            basename = locations.default_basename(name) if filename is None else \
                locations.check_basename(filename)
        except LocationError as exc:
            raise AllocationError(f"ingredient '{name}': bad filename: {exc}", ingredient=name) from exc
        location = locations.file_location(storage, basename)
        warehouse.hold(location)
        path = warehouse.paths.path_for_write(location)
        open(path, "wb").close()
        return path, location

    def deallocate(self, warehouse: "Warehouse", storage: str) -> None:
        """Remove the version's own directory (never following a symlink)."""
        own = locations.owner(locations.check(storage, "file"))
        remove_tree(warehouse.paths.lexical(own))


def fsync_file(path: str) -> None:
    """fsync one file's content."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove a file, a symlink (not its target) or a directory tree (symlinks inside are
    removed, not followed)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


class Registry:
    """``{type key: Codec}``, and the order in which a value sent without a type is
    recognized: the codecs in registration order (a key registered again keeps its place),
    then the fallback (``object``, which accepts anything).

    Parameters
    ----------
    codecs : iterable of Codec
        Registered in order.
    fallback : Codec
        Used (and registered) for what no other codec accepts.
    """

    def __init__(self, codecs: Iterable[Codec], fallback: Codec):
        self._codecs: dict[str, Codec] = {}
        self._order: list[Codec] = []
        self.fallback = fallback
        for codec in codecs:
            self.register(codec)
        self._codecs[fallback.key] = fallback

    def register(self, codec: Codec) -> None:
        """Add ``codec`` under ``codec.key``, replacing the codec registered under it.

        Raises
        ------
        IngredientTypeError
            for a codec without a key (a non-empty str).
        """
        if not isinstance(codec.key, str) or not codec.key:
            raise IngredientTypeError(f"codec {codec!r} has no key (a non-empty str)")
        self._codecs[codec.key] = codec
        self._order = [c for c in self._codecs.values() if c is not self.fallback]

    def get(self, key: str) -> Codec | None:
        """The codec of type ``key``, or None."""
        return self._codecs.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._codecs

    def __iter__(self) -> Iterator[Codec]:
        return iter(list(self._codecs.values()))

    def infer(self, value: Any) -> str:
        """The key of the first codec that accepts ``value`` (the fallback's otherwise)."""
        for codec in self._order:
            if codec.accepts(value):
                return codec.key
        return self.fallback.key


def builtin_registry() -> Registry:
    """A registry of fresh built-in codecs: simple, list, array, file; object as fallback."""
    pickled = PickleCodec("object")
    return Registry([PickleCodec("simple"), PickleCodec("list"), ArrayCodec(pickled), FileCodec()], pickled)


def spec_call(spec_name: str, ingredient: str | None, what: str, call: Callable[[], Any]) -> Any:
    """Run a spec's (or custom codec's) own code: a ``PyPlantError`` and an ``OSError`` (the
    disk refused) pass as they are; any other exception is a bug in the spec and becomes a
    ``SpecError`` naming the spec and the ingredient, with the original as ``__cause__``."""
    try:
        return call()
    except (PyPlantError, OSError, LocationError):
        raise
    except Exception as exc:
        raise SpecError(f"spec '{spec_name}' raised in {what}"
                        f"{f' for ingredient {ingredient!r}' if ingredient else ''}: "
                        f"{type(exc).__name__}: {exc}", spec=spec_name, ingredient=ingredient) from exc
