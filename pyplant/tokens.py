"""Stable tokens: a canonical text for any value, equal across processes exactly when the
values are equal.

One encoder serves config values (``stable_token``, below) and the data that code reaches
(``dependencies.py``). It dispatches on what a value is:

* scalars by ``repr`` (ints of any size by their bytes), strings and bytes by content;
* containers element-wise (dicts in their order, which code iterating them sees; sets
  sorted); a container that holds itself encodes the back reference
  (``cycle:k``, k levels up) instead of recursing;
* arrays by content (``array_hash``), pandas objects by ``hash_pandas_object`` plus dtypes and
  names (a categorical by its categories and their order too), NumPy scalars by dtype and
  bytes (``hashing.dtype_text``: structured dtypes by their fields); arrays mapped read-only
  from a file (``np.load(mmap_mode='r')``, received ingredients) and HDF5 datasets by the
  file's identity, size and modification time (a writable mapping by content: its pages may
  differ from the file's);
* code (functions, classes, modules, builtins) through the ``code`` callback: the config
  encoder asks for a hash of all the code a callable reaches, the dependency walk for a label;
* bound methods, partials, ``staticmethod``/``classmethod``/``property`` and wrappers with
  ``__wrapped__`` (``functools.lru_cache``) by their parts;
* instances that pickle by their attributes (the default) by their class (through ``code``)
  and their ``__dict__`` and ``__slots__``; other objects by the parts of ``__reduce_ex__(4)``
  (``Path``, ``datetime``, ``Decimal``, NumPy generators...); failing that, by a ``repr``
  without a memory address;
* resources (locks, threads, loggers, files, executors, weak references) by their type only:
  they hold no state that a result depends on;
* anything else is untrackable: ``TokenizationError``, or the ``untracked`` callback.
"""
from __future__ import annotations

import collections
import enum
import functools
import os
import sys
import types
import warnings
import weakref
from typing import Any, Callable

import numpy as np

from . import hashing
from .errors import TokenizationError

_SCALARS = (type(None), bool, float, complex)
_LONG_TEXT = 256          # longer strings and bytes are encoded by their hash
_BIG_INT_BITS = 4096      # ints beyond this are encoded by their bytes (repr is limited)

_CODE_TYPES = (types.FunctionType, type, types.ModuleType, types.BuiltinFunctionType,
               types.WrapperDescriptorType, types.MethodDescriptorType,
               types.ClassMethodDescriptorType, types.GetSetDescriptorType,
               types.MemberDescriptorType)


class StateView:
    """What the dependency walk found to be state: left out of tokens (see dependencies.py)."""

    def is_state(self, value: Any) -> bool:
        return False

    def skipped_attributes(self, value: Any) -> frozenset[str] | set[str]:
        return frozenset()


class Tokenizer:
    """Encodes values; keeps, for one walk, the encoding of every compound value it met.

    Parameters
    ----------
    code : callable
        ``code(obj) -> str`` for functions, classes, modules and builtins.
    untracked : callable, optional
        ``untracked(obj) -> str`` for a value with no stable encoding; without it,
        ``TokenizationError`` is raised.
    state : StateView, optional
        Values and attributes to leave out.
    """

    def __init__(self, code: Callable[[Any], str], untracked: Callable[[Any], str] | None = None,
                 state: StateView | None = None):
        self.code = code
        self.untracked = untracked
        self.state = state or StateView()
        self.found: list[Any] = []        # whatever the callbacks record, in order
        self._path: dict[int, int] = {}   # ids of the compound values being encoded -> depth
        self._memo: dict[int, tuple[Any, str, tuple]] = {}
        self._cycles = 0

    def reset(self) -> None:
        """Forget remembered encodings (the state changed)."""
        self._memo.clear()

    def token(self, value: Any) -> str:
        """The stable token (a hex digest) of ``value``."""
        return hashing.digest("token", self.encode(value))

    def encode(self, value: Any) -> str:
        kind = type(value)
        if kind in _SCALARS:
            return f"{kind.__name__}:{value!r}"
        if kind is int:
            return _encode_int(value)
        if kind is str or kind is bytes:
            return _encode_text(value)
        key = id(value)
        depth = self._path.get(key)
        if depth is not None:
            self._cycles += 1
            return f"cycle:{len(self._path) - depth}"
        memo = self._memo.get(key)
        if memo is not None and memo[0] is value:
            self.found.extend(memo[2])
            return memo[1]
        if self.state.is_state(value):
            return "state"
        self._path[key] = len(self._path)
        cycles, start = self._cycles, len(self.found)
        try:
            text = self._encode_compound(value)
        except TokenizationError:
            if self.untracked is None:
                raise
            text = self.untracked(value)
        except Exception as exc:  # RecursionError, or a library object failing while encoded
            if self.untracked is None:
                what = "is nested too deeply to tokenize" if isinstance(exc, RecursionError) \
                    else f"cannot be tokenized ({type(exc).__name__}: {exc})"
                raise TokenizationError(f"a value of type {_qualname(kind)} {what}") from exc
            text = self.untracked(value)
        finally:
            del self._path[key]
        if self._cycles == cycles:  # no back reference above it: the text does not depend on the path
            self._memo[key] = (value, text, tuple(self.found[start:]))
        return text

    # --- dispatch ------------------------------------------------------------------------

    def _encode_compound(self, value: Any) -> str:  # noqa: C901 (one branch per kind of value)
        kind = type(value)
        enc = self.encode
        if _is_pyplant(kind):
            return f"pyplant:{_qualname(kind)}"
        if isinstance(value, enum.Enum):
            return f"enum:{self.code(kind)}.{value.name}"
        if isinstance(value, _CODE_TYPES) and not _bound_to_instance(value):
            return self.code(value)
        if isinstance(value, (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)):
            func = enc(value.__func__) if hasattr(value, "__func__") else _qualname(value)
            return f"method({func},{enc(value.__self__)})"
        if isinstance(value, functools.partial):
            return f"partial({enc(value.func)},{enc(value.args)},{enc(value.keywords)},{enc(_own_dict(value))})"
        if isinstance(value, (staticmethod, classmethod)):
            return f"{kind.__name__}({enc(value.__func__)})"
        if isinstance(value, property):
            return f"property({enc(value.fget)},{enc(value.fset)},{enc(value.fdel)})"
        if isinstance(value, functools.cached_property):
            return f"cached_property({enc(value.func)})"
        wrapped = _own_dict(value).get("__wrapped__")
        if wrapped is not None:  # functools.lru_cache and other wrapper objects
            return f"wrapped:{self.code(kind)}({enc(wrapped)})"
        if isinstance(value, (tuple, list)):
            return f"{self._type(kind)}[{','.join(enc(v) for v in value)}]{self._extra(value)}"
        if isinstance(value, dict):
            return self._encode_dict(value)
        if isinstance(value, (set, frozenset)):
            return f"{self._type(kind)}{{{','.join(sorted(enc(v) for v in value))}}}{self._extra(value)}"
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            mapped = _mapped_file(value)
            if mapped is not None:
                return mapped
        if kind is np.ndarray or kind is np.memmap:  # a memmap here is writable: by content
            if value.dtype.hasobject:
                return f"ndarray:{hashing.dtype_text(value.dtype)}{value.shape}[{enc(value.tolist())}]"
            return f"ndarray:{hashing.array_hash(value)}"
        if isinstance(value, np.generic) and not value.dtype.hasobject:
            return f"np:{hashing.dtype_text(value.dtype)}:{value.tobytes().hex()}"
        if kind is range:
            return f"range({value.start},{value.stop},{value.step})"
        if kind is slice:
            return f"slice({enc(value.start)},{enc(value.stop)},{enc(value.step)})"
        if isinstance(value, types.MappingProxyType):
            return f"mappingproxy{self._encode_dict(dict(value))}"
        if kind is memoryview:
            return f"memoryview:{value.format}:{value.shape}:{hashing.bytes_hash(value.tobytes())}"
        if kind is types.CodeType:
            return f"codeobject:{hashing.bytes_hash(hashing.code_fingerprint(value))}"
        if _is_resource(value):
            return f"resource:{_qualname(kind)}"
        package = (kind.__module__ or "").split(".")[0]
        if package == "pandas":
            text = self._encode_pandas(value)
            if text is not None:
                return text
        if package == "h5py":
            text = _encode_hdf(value)
            if text is not None:
                return text
        if _pickles_by_attributes(kind) and (kind.__dictoffset__ or _slot_names(kind)):
            return self._encode_attributes(value)
        return self._encode_reduced(value)

    def _type(self, kind: type) -> str:
        """Builtin containers by name; their subclasses (namedtuples...) as code."""
        return kind.__name__ if kind.__module__ == "builtins" else self.code(kind)

    def _extra(self, value: Any) -> str:
        attrs = _own_dict(value)
        return f"+{self.encode(attrs)}" if attrs else ""

    def _encode_dict(self, value: dict) -> str:
        enc = self.encode
        # in order: equal dicts in another order are iterated differently by the code reading them
        items = [f"{enc(k)}:{enc(v)}" for k, v in value.items()]
        extra = ""
        if isinstance(value, collections.defaultdict):
            extra = f"default={enc(value.default_factory)}"
        return f"{self._type(type(value))}{{{','.join(items)}}}{extra}{self._extra(value)}"

    def _encode_attributes(self, value: Any) -> str:
        cls = self.code(type(value))  # first: its methods say which attributes are state
        skipped = self.state.skipped_attributes(value)
        computed = cached_properties(type(value))  # values computed from the others
        attrs = {k: v for k, v in _own_dict(value).items()
                 if not k.startswith("_pyplant") and k not in skipped and k not in computed}
        for name in _slot_names(type(value)):
            if name not in skipped and name not in attrs:
                try:
                    attrs[name] = object.__getattribute__(value, name)
                except AttributeError:  # an unset slot
                    continue
        return f"obj:{cls}{self.encode(attrs)}"

    def _encode_reduced(self, value: Any) -> str:
        """By the parts pickle would store: ``Path``, ``datetime``, ``Decimal``, generators..."""
        try:
            with warnings.catch_warnings():  # a library deprecating its pickling is not our news
                warnings.simplefilter("ignore")
                reduced = value.__reduce_ex__(4)
        except Exception:
            reduced = None
        if isinstance(reduced, str):  # a global, pickled by name
            return f"global:{_qualname(type(value))}.{reduced}"
        if isinstance(reduced, tuple) and len(reduced) >= 2:
            parts = list(reduced[:3])
            for items in reduced[3:5]:
                parts.append(list(items) if items is not None else None)
            return f"reduce:{_qualname(type(value))}({','.join(self.encode(p) for p in parts)})"
        text = _safe_repr(value)
        if text is not None:
            return f"repr:{_qualname(type(value))}:{text}"
        if self.untracked is None:
            raise TokenizationError(f"cannot make a stable token of a {_qualname(type(value))} "
                                    f"object: it cannot be pickled and its repr holds a memory address")
        return self.untracked(value)

    def _encode_pandas(self, value: Any) -> str | None:
        """By content: ``hash_pandas_object`` (values and index) plus dtypes and names."""
        import pandas as pd  # only when the value is a pandas object

        enc = self.encode

        def dtype(d: Any) -> str:  # a categorical's str is 'category', whatever its categories
            if isinstance(d, pd.CategoricalDtype):
                return f"category({enc(list(d.categories))},{d.ordered})"
            return str(d)

        try:
            if isinstance(value, pd.DataFrame):
                content = pd.util.hash_pandas_object(value, index=True).to_numpy()
                return (f"pandas.DataFrame{value.shape}:{hashing.array_hash(content)}:"
                        f"{enc(list(value.columns))}:{enc([dtype(d) for d in value.dtypes])}:"
                        f"{enc(list(value.index.names))}:{dtype(value.index.dtype)}")
            if isinstance(value, pd.Series):
                content = pd.util.hash_pandas_object(value, index=True).to_numpy()
                return (f"pandas.Series{value.shape}:{hashing.array_hash(content)}:{enc(value.name)}:"
                        f"{dtype(value.dtype)}:{enc(list(value.index.names))}:{dtype(value.index.dtype)}")
            if isinstance(value, pd.Index):
                content = pd.util.hash_pandas_object(value).to_numpy()
                return (f"pandas.{type(value).__name__}{value.shape}:{hashing.array_hash(content)}:"
                        f"{dtype(value.dtype)}:{enc(list(value.names))}")
        except TypeError:  # unhashable cells (lists in an object column): by their parts instead
            return None
        return None


def _mapped_file(arr: np.ndarray) -> str | None:
    """An array backed by a memory-mapped file (``np.load(..., mmap_mode='r')``, an array
    received from the plant) is known by the file's identity, size and modification time and
    by where in it the array lies: reading gigabytes to hash them would cost a pass over the
    disk, and a file truncated behind the mapping would crash the process (SIGBUS)."""
    base = arr
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and isinstance(base.filename, str):
            break
        base = base.base
    else:
        return None
    if base.mode != "r":  # writable or copy-on-write: its pages, not the file, hold the values
        return None
    try:
        stat = os.stat(base.filename)
    except OSError:
        return f"mmap:{base.filename}:missing"
    offset = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0] + base.offset
    return (f"mmap:{os.path.realpath(base.filename)}:{stat.st_size}:{stat.st_mtime_ns}:{hashing.dtype_text(arr.dtype)}:"
            f"{arr.shape}:{arr.strides}:{offset}")


def _encode_hdf(value: Any) -> str | None:
    """An HDF5 dataset or group by its file's identity and its name (its content lives in the
    file: hashing it would read it all); a file handle is a resource."""
    import h5py  # only when the value is an h5py object

    if isinstance(value, h5py.File):
        return "resource:h5py.File"
    if not isinstance(value, (h5py.Dataset, h5py.Group)) or not value.id.valid:
        return None
    path = value.file.filename
    try:
        stat = os.stat(path)
    except OSError:
        return f"hdf:{path}:missing:{value.name}"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f"hdf:{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}:{value.name}:{shape}:{dtype}"


def _encode_int(value: int) -> str:
    if value.bit_length() <= _BIG_INT_BITS:
        return f"int:{value!r}"
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return f"int:0x{hashing.bytes_hash(data)}"


def _encode_text(value: str | bytes) -> str:
    name = type(value).__name__
    if len(value) <= _LONG_TEXT:
        return f"{name}:{value!r}"
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return f"{name}:{len(value)}:{hashing.bytes_hash(data)}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _is_pyplant(kind: type) -> bool:
    return (kind.__module__ or "").split(".")[0] == "pyplant"


def _bound_to_instance(value: Any) -> bool:
    """A builtin method bound to an object (``[].append``) carries that object."""
    owner = getattr(value, "__self__", None)
    return isinstance(value, types.BuiltinMethodType) and owner is not None \
        and not isinstance(owner, (types.ModuleType, type))


def _own_dict(value: Any) -> dict:
    try:
        attrs = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _per_class(compute: Callable[[type], Any]) -> Callable[[type], Any]:
    """Cache ``compute(kind)`` per class, for as long as the class lives (a class redefined in
    a notebook cell is a new class; the old entry goes with the old class)."""
    cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @functools.wraps(compute)
    def cached(kind: type) -> Any:
        try:
            return cache[kind]
        except KeyError:
            result = cache[kind] = compute(kind)
            return result
        except TypeError:  # a class that refuses weak references
            return compute(kind)
    return cached


@_per_class
def _slot_names(kind: type) -> tuple[str, ...]:
    names: list[str] = []
    for cls in kind.__mro__:
        slots = vars(cls).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return tuple(names)


@_per_class
def cached_properties(kind: type) -> frozenset[str]:
    """Names of ``functools.cached_property`` attributes: their cached values are computed."""
    return frozenset(name for cls in kind.__mro__ for name, value in vars(cls).items()
                     if isinstance(value, functools.cached_property))


@_per_class
def _pickles_by_attributes(kind: type) -> bool:
    """True when instances pickle as their class plus ``__dict__``/slots (no custom reduce)."""
    if kind.__module__ == "builtins":
        return False
    return (getattr(kind, "__reduce_ex__", None) is object.__reduce_ex__
            and getattr(kind, "__reduce__", None) is object.__reduce__
            and getattr(kind, "__getstate__", object.__getstate__) is object.__getstate__
            and not hasattr(kind, "__getnewargs_ex__") and not hasattr(kind, "__getnewargs__"))


def _safe_repr(value: Any) -> str | None:
    try:
        text = repr(value)
    except Exception:
        return None
    return None if " at 0x" in text or "object at" in text else text


# Objects that hold no state a result depends on: locks, threads, loggers, files, executors,
# weak references, sockets, queues, processes. Their classes, from the modules already imported.
_RESOURCES: list[tuple[str, str]] = [
    ("_thread", "LockType"), ("_thread", "RLock"), ("threading", "Thread"), ("threading", "Condition"),
    ("threading", "Event"), ("threading", "Semaphore"), ("threading", "Barrier"), ("threading", "local"),
    ("logging", "Logger"), ("logging", "Handler"), ("logging", "LoggerAdapter"), ("logging", "Manager"),
    ("logging", "PlaceHolder"), ("io", "IOBase"), ("concurrent.futures", "Executor"),
    ("concurrent.futures", "Future"), ("weakref", "ref"), ("weakref", "ProxyType"),
    ("weakref", "CallableProxyType"), ("weakref", "WeakValueDictionary"), ("weakref", "WeakKeyDictionary"),
    ("weakref", "WeakSet"), ("weakref", "finalize"), ("socket", "socket"), ("queue", "Queue"),
    ("queue", "SimpleQueue"), ("multiprocessing.pool", "Pool"), ("subprocess", "Popen"),
    ("sqlite3", "Connection"), ("sqlite3", "Cursor"), ("asyncio", "AbstractEventLoop"),
    ("selectors", "BaseSelector"), ("tempfile", "TemporaryDirectory"), ("contextvars", "ContextVar"),
]
_resource_types: tuple[type, ...] = ()
_resource_missing = list(_RESOURCES)


def _is_resource(value: Any) -> bool:
    global _resource_types
    if _resource_missing:
        found = [(m, n) for m, n in _resource_missing if m in sys.modules]
        for module, name in found:
            _resource_missing.remove((module, name))
            cls = getattr(sys.modules[module], name, None)
            if isinstance(cls, type):
                _resource_types += (cls,)
    return isinstance(value, _resource_types)


# --- stable tokens of config values -----------------------------------------------------------

def stable_token(value: Any, code_hasher: Callable[[Callable], str] = hashing.code_hash) -> str:
    """A hash of ``value`` that is equal across processes exactly when the values are equal.

    Containers are walked (a container holding itself is fine), arrays and pandas objects
    hashed by content, functions and classes by ``code_hasher`` (the scheduler passes one that
    covers all the code they reach), instances by class and attributes, library objects by what
    pickle would store; see ``tokens.py``.

    Raises
    ------
    TokenizationError
        when the value has no stable representation (it cannot be pickled and its repr holds a
        memory address, or it is nested too deeply).
    """
    tokenizer = Tokenizer(lambda obj: _code_text(obj, code_hasher, tokenizer))
    return tokenizer.token(value)


def _code_text(obj: Any, code_hasher: Callable[[Callable], str], tokenizer: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module:{obj.__name__}"
    if isinstance(obj, (types.FunctionType, type)):
        text = f"code:{code_hasher(obj)}"
        if code_hasher is hashing.code_hash and isinstance(obj, types.FunctionType):
            # the plain code hash is the function's own code: add the values bound to it
            cells = {}
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
                try:
                    cells[name] = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
            text += tokenizer.encode((obj.__defaults__, obj.__kwdefaults__, cells))
        return text
    return f"builtin:{hashing.qualified_name(obj)}"
