"""Ingredient type specs: how values of one kind are allocated, stored and fetched.

``IngredientTypeSpec`` is PyPlant's extension point, kept name for name. The warehouse calls a
spec with a *storage name* that is unique per version (``<ingredient>@<token>``), so a spec that
writes ``os.path.join(warehouse.baseDir, name + '.ext')`` keeps every version apart for free.

A spec may define ``content_hash(value) -> str`` for early cutoff. Without it the version's
storage name, unique per version, stands for its content hash: consumers then re-run whenever
the producer re-ran, and a version found again (config A -> B -> A) keeps its hash.
``HdfArraySpec`` takes that road on purpose: hashing a multi-GB out-of-core array would cost a
full extra pass over the disk, and an HDF array is written in place, so hashing "as written"
cannot follow random-access writes.
"""
from __future__ import annotations

import abc
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import hashing
from ..errors import AllocationError, InvalidOperationException

if TYPE_CHECKING:
    from . import Warehouse


class IngredientTypeSpec(abc.ABC):
    """Base of ingredient type specs: PyPlant's extension point for values stored in files of
    their own (HDF5, ``.npz``, ``.keras``), kept name for name.

    Implement ``get_name``, ``store`` and ``fetch``; ``is_instance`` to be chosen for values
    sent without a type; for types created in place, set ``self.isAllocatable = True`` and
    implement ``allocate`` and ``deallocate``. Optional: ``content_hash(value) -> str`` (early
    cutoff; without it the storage name stands for the content), ``verify`` (a cheap structural
    check of a loaded value), ``stored_value`` (what consumers receive after ``store``),
    ``close``. ``__init__`` must take no arguments besides optional settings. Register an
    instance with ``plant.warehouse.register_ingredient_specs([MySpec()])``.

    Every method gets a *storage name* ``name`` unique to one version (``<ingredient>@<16
    hex>``) and must write only ``os.path.join(warehouse.baseDir, name + <suffix>)`` (or a
    directory of that name): that is what the warehouse verifies, frees and sweeps. The
    warehouse records the size and hash of those files after ``store`` and checks them before
    ``fetch``, so a missing or altered file is recomputed; an exception your code raises on
    intact files is reported as a ``SpecError`` naming the spec and the ingredient.
    """

    def __init__(self) -> None:
        self.isAllocatable = False

    @classmethod
    @abc.abstractmethod
    def get_name(cls) -> str:
        """A unique name of the type, stored with each version (never change it once versions
        exist: a version whose spec is not registered cannot be loaded and is recomputed)."""

    @abc.abstractmethod
    def store(self, warehouse: "Warehouse", name: str, value: Any) -> dict[str, Any] | None:
        """Persist ``value`` under storage name ``name``.

        Parameters
        ----------
        warehouse : Warehouse
            ``warehouse.baseDir`` is the directory to write in; ``warehouse.durable`` asks for
            fsync (the warehouse fsyncs the files it finds after ``store``).
        name : str
            The storage name of this version.
        value : Any
            What the reactor sent (or, for an allocated value, what ``allocate`` returned).

        Returns
        -------
        dict or None
            Plain data passed back to ``fetch`` (shape, dtype, format, ...).

        Raises
        ------
        OSError
            when the disk refuses (reported as ``WarehouseError``); any other exception is a
            bug (reported as ``SpecError``).
        """

    @abc.abstractmethod
    def fetch(self, warehouse: "Warehouse", name: str, meta: dict[str, Any] | None) -> Any:
        """Load the value stored under storage name ``name``.

        Parameters
        ----------
        meta : dict or None
            What ``store`` returned.

        Returns
        -------
        Any
            The value, or None when nothing is stored under ``name`` (the version is then
            recomputed).
        """

    def allocate(self, warehouse: "Warehouse", name: str, **kwargs: Any) -> Any:
        """Create a value to be filled in place under storage name ``name`` (only when
        ``isAllocatable``); ``kwargs`` are what the reactor passed to ``pipe.allocate``.

        Returns
        -------
        Any
            What the reactor fills (an ``h5py.Dataset``); ``store`` gets it when it is sent.

        Raises
        ------
        AllocationError
            for bad arguments (name the argument and the value).
        InvalidOperationException
            by default: the type cannot be allocated.
        """
        raise InvalidOperationException(f"{self.get_name()} cannot be allocated", spec=self.get_name())

    def deallocate(self, warehouse: "Warehouse", name: str) -> None:
        """Remove what ``allocate``/``store`` wrote under ``name`` and close its handles (a
        failed reactor, a temporary allocation). Must not fail when nothing is there.

        Raises
        ------
        InvalidOperationException
            by default: the type cannot be allocated.
        """
        raise InvalidOperationException(f"{self.get_name()} cannot be deallocated", spec=self.get_name())

    def close(self) -> None:
        """Release files and handles; called on plant shutdown (a failure is logged)."""

    def is_instance(self, value: Any) -> bool:
        """True when ``value``, sent without a type, should be stored with this spec; False by
        default. Must be cheap and must not import heavy modules (see ``sys.modules``)."""
        return False

    def verify(self, value: Any, meta: dict[str, Any] | None) -> bool:
        """A cheap check of a fetched value against ``meta`` (what ``store`` returned): False
        marks the version damaged. True by default."""
        return True

    def stored_value(self, warehouse: "Warehouse", name: str, value: Any,
                     meta: dict[str, Any] | None) -> Any:
        """What consumers in this session receive once ``value`` is stored: ``value`` itself
        by default; a spec whose ``store`` closes the value returns ``fetch``'s."""
        return value


class HdfArraySpec(IngredientTypeSpec):
    """An HDF5 array larger than RAM, allocated zero-filled and written in place (h5py).

    ``pipe.allocate(name, HdfArraySpec, shape=(rows, cols), dtype=np.float32, **h5py_kwargs)``
    returns an ``h5py.Dataset``; consumers receive it read-only. Keyed by version, not hashed
    (see the module docstring), so there is no early cutoff below an HDF array.

    Raises
    ------
    AllocationError
        for a shape that is not a tuple of non-negative ints, or a dtype h5py cannot store.
    """

    def __init__(self) -> None:
        super().__init__()
        self.isAllocatable = True
        self._files: dict[str, Any] = {}

    @classmethod
    def get_name(cls) -> str:
        return "hdf_array"

    def _path(self, warehouse: "Warehouse", name: str) -> str:
        return os.path.join(warehouse.baseDir, name + ".hdf")

    def allocate(self, warehouse: "Warehouse", name: str, shape: Any = None, dtype: Any = np.float32,
                 **kwargs: Any) -> Any:
        import h5py
        shape = _check_shape(name, shape)
        dtype = _check_dtype(name, dtype)
        self._close(name)
        f = h5py.File(self._path(warehouse, name), "w")
        self._files[name] = f
        try:
            fill = {"fillvalue": 0} if dtype.fields is None else {}  # compound: HDF5's zero fill
            return f.create_dataset("data", shape=shape, dtype=dtype, **fill, **kwargs)
        except (TypeError, ValueError) as exc:
            self._close(name)
            raise AllocationError(f"cannot allocate HDF array '{name}': {exc}", ingredient=name) from exc

    def store(self, warehouse: "Warehouse", name: str, value: Any) -> dict[str, Any] | None:
        import h5py
        if name not in self._files:  # an in-memory array sent with this spec: write it whole
            data = np.asarray(value)
            self.allocate(warehouse, name, shape=data.shape, dtype=data.dtype)[...] = data
        f = self._files.pop(name)
        shape, dtype = f["data"].shape, f["data"].dtype.str
        f.close()  # closed and re-opened read-only: consumers cannot write into a version
        return {"shape": list(shape), "dtype": dtype, "h5py": h5py.__version__}

    def fetch(self, warehouse: "Warehouse", name: str, meta: dict[str, Any] | None) -> Any:
        import h5py
        path = self._path(warehouse, name)
        if not os.path.exists(path):
            return None
        if name not in self._files:
            self._files[name] = h5py.File(path, "r")
        return self._files[name]["data"]

    def verify(self, value: Any, meta: dict[str, Any] | None) -> bool:
        """The dataset has the recorded shape and dtype."""
        meta = meta or {}
        return list(value.shape) == meta.get("shape", list(value.shape)) and \
            value.dtype.str == meta.get("dtype", value.dtype.str)

    def stored_value(self, warehouse: "Warehouse", name: str, value: Any,
                     meta: dict[str, Any] | None) -> Any:
        """A read-only handle (``store`` closed the writable one)."""
        return self.fetch(warehouse, name, meta)

    def deallocate(self, warehouse: "Warehouse", name: str) -> None:
        self._close(name)
        try:
            os.remove(self._path(warehouse, name))
        except FileNotFoundError:
            pass

    def _close(self, name: str) -> None:
        f = self._files.pop(name, None)
        if f is not None:
            f.close()

    def close(self) -> None:
        for name in list(self._files):
            self._close(name)

    def is_instance(self, value: Any) -> bool:
        h5py = sys.modules.get("h5py")
        return h5py is not None and isinstance(value, h5py.Dataset)


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    ok = isinstance(shape, (tuple, list)) and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape)
    if not ok:
        raise AllocationError(f"cannot allocate HDF array '{name}': shape must be a tuple of "
                              f"non-negative ints, got {shape!r}", ingredient=name)
    return tuple(int(n) for n in shape)


def _check_dtype(name: str, dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise AllocationError(f"cannot allocate HDF array '{name}': bad dtype {dtype!r}",
                              ingredient=name) from exc
    if dt.kind in "OV" and dt.fields is None:
        raise AllocationError(f"cannot allocate HDF array '{name}': h5py cannot store dtype {dt}",
                              ingredient=name)
    return dt


class ScipySparseSpec(IngredientTypeSpec):
    """A SciPy sparse matrix or array, stored with ``scipy.sparse.save_npz`` (uncompressed).

    Formats ``save_npz`` cannot write (``lil``, ``dok``) are stored as CSR with their format
    recorded, and come back in that format (and as a matrix or an array, as sent). Its content
    hash covers format, shape, dtype and the index and data arrays, so a re-run that produces
    the same matrix stops there (early cutoff).
    """

    NATIVE_FORMATS = ("csr", "csc", "coo", "bsr", "dia")

    @classmethod
    def get_name(cls) -> str:
        return "scipy_sparse"

    def _path(self, warehouse: "Warehouse", name: str) -> str:
        return os.path.join(warehouse.baseDir, name + ".npz")

    def store(self, warehouse: "Warehouse", name: str, value: Any) -> dict[str, Any] | None:
        import scipy.sparse as sp
        from .store import atomic_write
        native = self._native(value)
        atomic_write(self._path(warehouse, name), lambda f: sp.save_npz(f, native, compressed=False),
                     warehouse.durable)
        return {"format": value.format, "shape": list(value.shape)}

    def fetch(self, warehouse: "Warehouse", name: str, meta: dict[str, Any] | None) -> Any:
        import scipy.sparse as sp
        path = self._path(warehouse, name)
        if not os.path.exists(path):
            return None
        value = sp.load_npz(path)
        fmt = (meta or {}).get("format", value.format)
        return value if value.format == fmt else value.asformat(fmt)

    def _native(self, value: Any) -> Any:
        return value if value.format in self.NATIVE_FORMATS else value.tocsr()

    def content_hash(self, value: Any) -> str:
        """Hex digest (32 characters) of format, shape, dtype, matrix or array, and the index
        and data arrays: equal matrices, equal hashes (early cutoff)."""
        native = self._native(value)
        parts = [value.format, repr(value.shape), value.dtype.str, type(value).__name__]
        for attr in ("data", "indices", "indptr", "row", "col", "offsets"):
            arr = getattr(native, attr, None)
            if isinstance(arr, np.ndarray):
                parts.append(f"{attr}={hashing.array_hash(arr)}")
        return hashing.digest("sparse", *parts)

    def is_instance(self, value: Any) -> bool:
        if not type(value).__module__.startswith("scipy.sparse"):
            return False
        import scipy.sparse as sp
        return sp.issparse(value)


class KerasModelSpec(IngredientTypeSpec):
    """A Keras model, saved with ``model.save(path.keras)``; keras is imported lazily."""

    def __init__(self, customLayers: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.customLayers = customLayers or {}

    @classmethod
    def get_name(cls) -> str:
        return "keras_model"

    def _path(self, warehouse: "Warehouse", name: str) -> str:
        return os.path.join(warehouse.baseDir, name + ".keras")

    def store(self, warehouse: "Warehouse", name: str, value: Any) -> dict[str, Any] | None:
        value.save(self._path(warehouse, name), overwrite=True)
        return None

    def fetch(self, warehouse: "Warehouse", name: str, meta: dict[str, Any] | None) -> Any:
        path = self._path(warehouse, name)
        if not os.path.exists(path):
            return None
        import keras
        return keras.models.load_model(path, custom_objects=self.customLayers)

    def is_instance(self, value: Any) -> bool:
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(value, keras.Model)
