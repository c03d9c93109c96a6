"""The warehouse: every version of every ingredient, on disk.

=================  ==========================================================================
records.py         typed records (``Version``, ``Trace``, ``HistoryRecord``, ...), defined once
backend.py         the storage interfaces: ``MetadataBackend``, ``BlobBackend``
lmdb_store.py      ``MetadataBackend`` on LMDB (``lmdb_env.py`` opens and validates it)
memory.py          ``MetadataBackend`` in memory (tests, engine unit tests, tools)
store.py           ``BlobBackend`` on the plant directory (content-addressed blobs)
codecs.py          one ``Codec`` per ingredient type, dispatched by type key (``spec_codec.py``
                   adapts an ``IngredientTypeSpec``; ``specs.py`` has HDF, sparse, Keras)
locations.py       the one definition of every storage location
leases.py          what live plants hold, so that GC never deletes it
gc.py              GC policy (a pure function over records) and the sweep
=================  ==========================================================================

Every location comes from ``locations.py`` (one definition for writing, loading, freeing and
GC); a location that no rule there derives is refused. Each location is recorded in the
plant's lease (``leases.py``) before it is loaded, allocated or written, so GC never deletes
what a live plant holds or is producing.

A value is written when it is sent; the version becomes visible only when its reactor finishes
and the metadata transaction naming it commits. A crash in between leaves an unreferenced
file, never a reference to a missing one.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from ..errors import (AllocationError, IngredientTypeError, PlantClosedError, PlantDirError,
                      PyPlantError, SerializationError, WarehouseError)
from . import codecs as _codecs, locations
from .backend import BlobBackend, MetadataBackend
from .codecs import INLINE_MAX_BYTES, VERIFY_MAX_BYTES, Codec, Stored, damaged
from .leases import Lease
from .lmdb_store import LmdbMetadata
from .locations import LocationError
from .records import HistoryRecord, ReactorRecord, Trace, Version
from .spec_codec import SpecCodec, spec_files
from .specs import HdfArraySpec, IngredientTypeSpec, ScipySparseSpec
from .store import BlobStore

__all__ = ["Warehouse", "ReadOnlyWarehouse", "Version", "Trace", "HistoryRecord", "ReactorRecord",
           "Stored", "Codec", "MetadataBackend", "BlobBackend", "INLINE_MAX_BYTES", "VERIFY_MAX_BYTES"]


class _Codecs:
    """What both warehouses share: the codec registry, and loading through it."""

    plantDir: str
    baseDir: str
    paths: locations.Root
    blobs: BlobBackend
    logger: logging.Logger

    def _init_codecs(self) -> None:
        self.codecs = _codecs.builtin_registry()
        self.ingredientSpecs: dict[str, IngredientTypeSpec] = {}
        self.register_ingredient_specs([HdfArraySpec(), ScipySparseSpec()])

    def _close_codecs(self) -> None:
        """Close every codec's handles (open HDF files); a failing one is logged, not raised."""
        for codec in list(self.codecs):
            try:
                codec.close()
            except Exception as exc:
                self.logger.warning("spec %s failed to close: %s", codec.key, exc)

    def _check_open(self, what: str) -> None:
        if self.metadata.closed:
            raise PlantClosedError(f"the warehouse in {self.plantDir} was closed (its plant was "
                                   f"shut down); {what}() needs an open plant", path=self.plantDir)

    def register_ingredient_specs(self, specs: Iterable[IngredientTypeSpec]) -> None:
        """Register spec instances (or classes, instantiated without arguments); a spec
        replaces the spec or codec registered under its name. Any time.

        Raises
        ------
        IngredientTypeError
            for a spec whose ``get_name()`` is not a non-empty str.
        """
        self._check_open("register_ingredient_specs")
        for spec in specs:
            if isinstance(spec, type):
                spec = spec()
            codec = SpecCodec(spec)
            self.codecs.register(codec)
            self.ingredientSpecs[codec.key] = spec

    def register_codecs(self, codecs: Iterable[Codec]) -> None:
        """Register codec instances (``codecs.Codec`` subclasses, see ``docs/codecs.md``); a
        codec replaces what was registered under its ``key``. Values sent without a type are
        offered to codecs in registration order, after the built-in simple, list and array.

        Raises
        ------
        IngredientTypeError
            for a codec without a key.
        """
        self._check_open("register_codecs")
        for codec in codecs:
            self.codecs.register(codec)
            self.ingredientSpecs.pop(codec.key, None)

    def hold(self, location: str | None) -> None:
        """Record ``location`` in the plant's lease before it is used (nothing read-only)."""

    def load(self, version: Version) -> Any:
        """Load a stored version; its location is recorded in the plant's lease first, and the
        value is checked against what was recorded (content hash, size, shape).

        Parameters
        ----------
        version : Version
            A version from a trace.

        Returns
        -------
        Any
            The value: arrays read-only (memory-mapped from 1 MiB on), files as their path.

        Raises
        ------
        CorruptVersionError
            when its storage is missing, truncated, altered or cannot be decoded, its type has
            no registered codec, or its location is not one the warehouse makes (tampered
            metadata, a symlink leading out of the plant directory); the caller recomputes it.
        SpecError
            when a spec's or custom codec's own code raises on intact storage (a bug).
        WarehouseError
            when the operating system refuses to read it (permissions, I/O error of a spec's
            files, a full disk when recording it in the lease).
        """
        codec = self.codecs.get(version.type)
        if codec is None:
            raise damaged(version, f"was stored with spec '{version.type}', which is not registered; "
                                   f"call plant.warehouse.register_ingredient_specs([...])")
        try:
            if version.location is not None or codec.location_kind != "blob":
                locations.check(version.location, codec.location_kind)
            self.hold(version.location)
            value = codec.load(self, version)
            codec.verify(self, version, value)
        except LocationError as exc:
            raise damaged(version, f"cannot be loaded from {version.location or 'the metadata'}: "
                                   f"{exc}") from exc
        except PyPlantError:
            raise
        except OSError as exc:
            raise WarehouseError(f"ingredient '{version.name}' cannot be read from "
                                 f"{version.location}: {exc}", ingredient=version.name,
                                 version=version, path=version.location) from exc
        return value

    def infer_type(self, value: Any, name: str | None = None, reactor: str | None = None) -> str:
        """The type key a value sent without a type is stored with: simple, list, array, the
        first spec or codec that accepts it, else object.

        Parameters
        ----------
        value : Any
            The value sent.
        name, reactor : str, optional
            The ingredient and the sending reactor, named in errors.

        Raises
        ------
        SpecError
            when a spec's ``is_instance`` raises.
        """
        try:
            return self.codecs.infer(value)
        except PyPlantError as exc:
            _name(exc, reactor, name)
            raise

    def check_type(self, key: str) -> None:
        """Raise ``IngredientTypeError`` (an ``AllocationError``) unless a codec is registered
        under ``key``."""
        if key not in self.codecs:
            raise IngredientTypeError(f"unknown ingredient type '{key}'; register its spec with "
                                      f"plant.warehouse.register_ingredient_specs([...])")

    def _warn_about_symlinks(self) -> None:
        for top in locations.TOPS:
            path = os.path.join(self.plantDir, top)
            if os.path.lexists(path) and not self.paths.is_inside(os.path.join(path, "x")):
                self.logger.warning("%s is a symlink to %s, outside the plant directory: pyplant "
                                    "never reads, writes or collects through it; versions stored "
                                    "there are recomputed, and storing fails until it is replaced "
                                    "by a directory", path, os.path.realpath(path))


class Warehouse(_Codecs):
    """Stores and loads versions; the plant's ``warehouse`` attribute.

    Parameters
    ----------
    plant_dir : str
        The plant directory (created by the caller).
    durable : bool
        fsync blobs, files, spec files and metadata commits (power-loss durability).
    logger : logging.Logger, optional
        Where warnings go (the plant's logger); ``logging.getLogger('pyplant')`` by default.
    metadata : MetadataBackend, optional
        The metadata store; the LMDB store in ``<plant_dir>/meta.lmdb`` by default.

    Raises
    ------
    PlantDirError
        when the metadata cannot be opened, or the lease cannot be created.

    Attributes
    ----------
    plantDir, baseDir : str
        The plant directory, and ``<plantDir>/specs`` where specs write (PyPlant's name).
    metadata : MetadataBackend
        Traces, producers, history, code memo.
    blobs : BlobBackend
        Content-addressed blobs.
    lease : leases.Lease
        This plant's lease.
    """

    def __init__(self, plant_dir: str, durable: bool = False, logger: logging.Logger | None = None,
                 metadata: MetadataBackend | None = None):
        self.plantDir = plant_dir
        self.baseDir = os.path.join(plant_dir, "specs")  # where specs write; PyPlant's name
        self.durable = durable
        self.logger = logger or logging.getLogger("pyplant")
        self._closed = False
        self.paths = locations.Root(plant_dir)
        try:
            for top in locations.TOPS:
                os.makedirs(os.path.join(plant_dir, top), exist_ok=True)
        except OSError as exc:
            raise PlantDirError(f"cannot create the storage directories in {plant_dir!r}: {exc}",
                                path=plant_dir) from exc
        self._warn_about_symlinks()
        self.metadata = metadata if metadata is not None else \
            LmdbMetadata(os.path.join(plant_dir, "meta.lmdb"), durable)
        try:
            self.lease = Lease(plant_dir)
        except BaseException as exc:
            self.metadata.close()
            if isinstance(exc, OSError) and not isinstance(exc, PyPlantError):
                raise PlantDirError(f"cannot create a lease in {plant_dir!r}: {exc}", path=plant_dir) from exc
            raise
        self.blobs = BlobStore(plant_dir, durable, hold=self.lease.hold)
        self._init_codecs()

    @classmethod
    def open_readonly(cls, plant_dir: str, logger: logging.Logger | None = None) -> "ReadOnlyWarehouse":
        """A read-only view of a plant directory (for reports and the command line): reads
        traces, history and versions; takes no lease and no lock of ours, never writes.

        Raises
        ------
        PlantDirError
            when ``plant_dir`` is not a directory holding plant metadata, or its metadata is
            damaged (open it with a ``Plant`` to repair it).
        """
        return ReadOnlyWarehouse(plant_dir, logger)

    # --- writing ---

    def storage_name(self, ingredient: str, temp: bool = False) -> str:
        """A file-system-safe name unique to one version of ``ingredient``
        (``[temp-]<safe name>@<16 hex digits>``)."""
        return locations.storage_name(ingredient, temp)

    def hold(self, location: str | None) -> None:
        self.lease.hold(location)

    def store(self, name: str, value: Any, key: str, allocated: str | None = None,
              reactor: str | None = None) -> Stored:
        """Write ``value`` as a pending version of ``name`` with type ``key``.

        Parameters
        ----------
        name : str
            The ingredient's name.
        value : Any
            What was sent.
        key : str
            A registered type key (``infer_type`` gives one). An ``ndarray`` subclass other
            than ``memmap`` sent as ``array`` is pickled (type ``object``), so that its type
            and extra state (a mask) survive.
        allocated : str, optional
            The storage location from ``allocate`` (files and allocatable specs).
        reactor : str, optional
            The sending reactor, named in errors.

        Returns
        -------
        Stored
            The version to commit and the value consumers receive.

        Raises
        ------
        IngredientTypeError
            for an unknown ``key``.
        SerializationError
            when neither pickle nor dill can store the value.
        SpecError
            when a spec's or custom codec's own code raises.
        WarehouseError
            when the disk refuses the write (full, read-only), or a location would leave the
            plant directory (a symlink out of it).
        """
        self.check_type(key)
        codec = self.codecs.get(key)
        try:
            return codec.store(self, name, value, allocated)
        except SerializationError as exc:
            raise SerializationError(f"reactor '{reactor}' sent ingredient '{name}': {exc}", reactor=reactor,
                                     ingredient=name) from exc.__cause__
        except PyPlantError as exc:
            _name(exc, reactor, name)
            raise
        except (OSError, LocationError) as exc:
            raise WarehouseError(f"reactor '{reactor}' cannot store ingredient '{name}': {exc}",
                                 reactor=reactor, ingredient=name) from exc

    def allocate(self, name: str, key: str, temp: bool = False, reactor: str | None = None,
                 **kwargs: Any) -> tuple[Any, str]:
        """Create a value to fill in place, in a new storage of its own.

        Parameters
        ----------
        name : str
            The ingredient's name.
        key : str
            A registered, allocatable type (``file``, ``hdf_array``, an allocatable spec).
        temp : bool
            A temporary allocation (its storage name starts with ``temp-``).
        reactor : str, optional
            The allocating reactor, named in errors.
        **kwargs
            ``filename=`` (one plain file name) for files; ``shape=``, ``dtype=`` and h5py
            options for HDF arrays; what the spec takes otherwise.

        Returns
        -------
        (Any, str)
            The value (a path, an ``h5py.Dataset``) and its storage location.

        Raises
        ------
        AllocationError
            for types that cannot be allocated, bad arguments (shape, dtype), or a
            ``filename`` that is not one plain file name.
        SpecError
            when a spec's own ``allocate`` raises something else.
        WarehouseError
            when the disk refuses, or the storage directory leads out of the plant directory.
        """
        self.check_type(key)
        storage = self.storage_name(name, temp)
        codec = self.codecs.get(key)
        try:
            if not codec.allocatable:
                raise AllocationError(f"ingredient '{name}' of type '{key}' cannot be allocated; "
                                      f"send it instead", ingredient=name)
            return codec.allocate(self, name, storage, **kwargs)
        except PyPlantError as exc:
            _name(exc, reactor, name)
            raise
        except (OSError, LocationError) as exc:
            raise WarehouseError(f"cannot allocate ingredient '{name}': {exc}", reactor=reactor,
                                 ingredient=name) from exc

    def deallocate(self, key: str, storage: str) -> None:
        """Free a temp allocation or the leftovers of a failed reactor: only what
        ``locations`` derives for it (a file ingredient's own directory, a spec's storage);
        never follows a symlink. Never raises: a failure is logged as a warning (freeing must
        never hide the error that led here)."""
        try:
            codec = self.codecs.get(key)
            if codec is not None:
                codec.deallocate(self, storage)
            else:  # a spec no longer registered: remove what is named after the storage
                for location in spec_files(self, locations.check(storage, "spec")):
                    _codecs.remove_tree(self.paths.lexical(location))
        except Exception as exc:
            self.logger.warning("could not free ingredient storage %s: %s", storage, exc)

    def free(self, version: Version) -> None:
        """Remove the per-version storage of a version whose reactor failed (files, specs);
        content-addressed blobs are left to GC (another version may share them). Never raises.

        Dispatches to the codec's ``free`` (a custom codec may override it); a version of a
        type no longer registered is freed as a spec's storage."""
        codec = self.codecs.get(version.type)
        if codec is None:
            if version.location:
                self.deallocate(version.type, version.location)
            return
        try:
            codec.free(self, version)
        except Exception as exc:
            self.logger.warning("could not free ingredient storage %s: %s", version.location, exc)

    def discard(self, version: Version) -> None:
        """Remove the damaged storage of a version, so that recomputing it writes it afresh
        (a content-addressed blob would otherwise be reused as it is). A symlink is removed
        itself, never its target. Never raises."""
        codec = self.codecs.get(version.type)
        if codec is not None:
            try:
                codec.discard(self, version)
            except Exception as exc:
                self.logger.warning("could not discard the damaged version of '%s': %s", version.name, exc)

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed


    def close(self) -> None:
        """Close codec and spec handles, the lease and the metadata; idempotent, and completes
        when called again after an interrupt landed inside it."""
        self._closed = True
        try:
            self._close_codecs()
        finally:
            try:
                self.lease.release()
            finally:
                self.metadata.close()


class ReadOnlyWarehouse(_Codecs):
    """A read-only view of a plant directory; see ``Warehouse.open_readonly``.

    It reads while other processes run the plant (LMDB readers never block writers) and
    writes nothing: no lease (so GC may delete a version that is being read: loading it then
    raises ``CorruptVersionError``), no code memo, no clean-close stamp. Use it as a context
    manager or call ``close``.

    Attributes
    ----------
    metadata : MetadataBackend
        Read methods only (``traces``, ``trace``, ``history``, ``reactor_records``,
        ``producers``, ...); write methods raise ``WarehouseError``.
    """

    durable = False

    def __init__(self, plant_dir: str, logger: logging.Logger | None = None):
        plant_dir = os.fspath(plant_dir)
        if not os.path.isdir(plant_dir):
            raise PlantDirError(f"plant directory {plant_dir!r} does not exist or is not a directory",
                                path=plant_dir)
        self.plantDir = plant_dir
        self.baseDir = os.path.join(plant_dir, "specs")
        self.logger = logger or logging.getLogger("pyplant")
        self.paths = locations.Root(plant_dir)
        self.metadata = LmdbMetadata(os.path.join(plant_dir, "meta.lmdb"), readonly=True)
        self.blobs = BlobStore(plant_dir, create=False)
        self._init_codecs()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self.metadata.closed

    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        """The reactor's traces, most recent first (see ``MetadataBackend.traces``)."""
        return self.metadata.traces(reactor, limit)

    def history(self) -> list[HistoryRecord]:
        """Every run recorded, oldest first."""
        return list(self.metadata.history())

    def reactor_records(self) -> dict[str, ReactorRecord]:
        """``{reactor: ReactorRecord}`` of every reactor recorded."""
        return self.metadata.reactor_records()

    def latest_versions(self) -> dict[str, Version]:
        """``{ingredient: Version}`` of the latest trace of each ingredient's producer."""
        found: dict[str, Version] = {}
        for ingredient, producer in self.metadata.producers().items():
            version = self.metadata.latest_version(producer, ingredient)
            if version is not None:
                found[ingredient] = version
        return found

    def close(self) -> None:
        """Close spec handles and the metadata view; idempotent."""
        try:
            self._close_codecs()
        finally:
            self.metadata.close()

    def __enter__(self) -> "ReadOnlyWarehouse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name(exc: PyPlantError, reactor: str | None, ingredient: str | None) -> None:
    """Fill in the reactor and the ingredient an error raised below the facade is about."""
    if exc.reactor is None:
        exc.reactor = reactor
    if ingredient is not None and (exc.ingredient is None or exc.ingredient != ingredient
                                   and "@" in exc.ingredient):
        exc.ingredient = ingredient  # a spec names the storage (<ingredient>@<token>)

