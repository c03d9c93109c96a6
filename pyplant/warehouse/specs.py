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
from ..errors import AllocationError

if TYPE_CHECKING:
    from . import Warehouse


class InvalidOperationException(Exception):
    """A spec was asked to allocate or deallocate but does not support it (PyPlant's name)."""


class IngredientTypeSpec(abc.ABC):
    """Base of ingredient type specs.

    Implement ``get_name``, ``store`` and ``fetch``; implement ``is_instance`` for type inference;
    set ``self.isAllocatable = True`` and implement ``allocate``/``deallocate`` for types that
    are created in place. ``__init__`` must take no arguments besides optional settings.
    """

    def __init__(self) -> None:
        self.isAllocatable = False

    @classmethod
    @abc.abstractmethod
    def get_name(cls) -> str:
        """A unique name of the type, stored with each version."""

    @abc.abstractmethod
    def store(self, warehouse: "Warehouse", name: str, value: Any) -> dict[str, Any] | None:
        """Persist ``value`` under storage name ``name``; return metadata for ``fetch``."""

    @abc.abstractmethod
    def fetch(self, warehouse: "Warehouse", name: str, meta: dict[str, Any] | None) -> Any:
        """Load the value stored under ``name``; return None when it is missing."""

    def allocate(self, warehouse: "Warehouse", name: str, **kwargs: Any) -> Any:
        raise InvalidOperationException(f"{self.get_name()} cannot be allocated")

    def deallocate(self, warehouse: "Warehouse", name: str) -> None:
        raise InvalidOperationException(f"{self.get_name()} cannot be deallocated")

    def close(self) -> None:
        """Release files and handles; called on plant shutdown."""

    def is_instance(self, value: Any) -> bool:
        """True when ``value`` should be stored with this spec when no type is given."""
        return False


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
