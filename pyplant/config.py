"""ConfigBase and ConfigValue: a config whose reads are recorded as dependencies.

A reactor receives a *bound* copy of the plant's config. Reading a parameter on it calls the
reader of the running reactor, which records the parameter and its stable token in the trace.
Auxiliary parameters (a log level, a temp dir) are read without being recorded, so changing
them never re-runs anything. Writing to a bound config raises ``ConfigWriteError``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from . import tokens
from .errors import ConfigError, ConfigWriteError, TokenizationError

# Names of ConfigBase's own API, never treated as parameters.
_API = frozenset({"peek", "has", "mark_auxiliary", "is_auxiliary", "get_param_names"})


class ConfigBase:
    """A config object; reading ``config.name`` inside a reactor records a dependency.

    Build it from a dict (``ConfigBase({'color': 'red'})``) or subclass it and set attributes
    after ``super().__init__()``. Parameters are the instance attributes that do not start with
    an underscore, and plain class attributes of subclasses.

    Raises
    ------
    ConfigError
        (an ``AttributeError``) on reading a parameter that does not exist.
    ConfigWriteError
        on assigning a parameter from inside a reactor.
    """

    def __init__(self, dictionary: dict[str, Any] | None = None):
        object.__setattr__(self, "_pyplant_aux", set())
        object.__setattr__(self, "_pyplant_reader", None)
        for name, value in (dictionary or {}).items():
            object.__setattr__(self, name, value)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name in _API:
            return object.__getattribute__(self, name)
        reader = object.__getattribute__(self, "_pyplant_reader")
        if reader is None:
            return object.__getattribute__(self, name)
        if not ConfigBase.has(self, name):
            return object.__getattribute__(self, name)  # methods and properties of subclasses
        value = ConfigBase.peek(self, name)
        if name not in object.__getattribute__(self, "_pyplant_aux"):
            try:
                reader(name, value)
            except AttributeError as exc:  # a ConfigError: Python would call __getattr__ instead
                object.__getattribute__(self, "__dict__")["_pyplant_failed_read"] = (name, exc)
                raise
        return value

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup failed: a parameter that does not exist.
        if name.startswith("__"):
            raise AttributeError(name)
        failed = self.__dict__.pop("_pyplant_failed_read", None)
        if failed is not None and failed[0] == name:
            raise failed[1]  # the parameter exists, its value could not be recorded
        reader = self.__dict__.get("_pyplant_reader")
        owner = getattr(reader, "reactor_name", None)
        where = f" (read by reactor '{owner}')" if owner else ""
        raise ConfigError(f"config parameter '{name}' does not exist{where}; known parameters: "
                          f"{sorted(self.get_param_names())}", reactor=owner)

    def __setattr__(self, name: str, value: Any) -> None:
        reader = self.__dict__.get("_pyplant_reader")
        if reader is not None and not name.startswith("_"):
            owner = getattr(reader, "reactor_name", None)
            raise ConfigWriteError(f"reactor '{owner}' tried to set config parameter '{name}'; "
                                   f"configs are read-only inside reactors (set them before run_reactor)",
                                   reactor=owner)
        object.__setattr__(self, name, value)

    def peek(self, name: str) -> Any:
        """Return a parameter's value without recording a dependency.

        Raises ``ConfigError`` when the parameter does not exist.
        """
        if not ConfigBase.has(self, name):
            return self.__getattr__(name)
        if name in self.__dict__:
            return self.__dict__[name]
        return getattr(type(self), name)

    def has(self, name: str) -> bool:
        """True when ``name`` is a parameter of this config."""
        if name.startswith("_") or name in _API:
            return False
        if name in self.__dict__:
            return not _is_cached_property(type(self), name)
        attr = getattr(type(self), name, None)
        return attr is not None and type(self) is not ConfigBase and _is_plain_value(attr)

    def get_param_names(self) -> list[str]:
        """The names of all parameters, instance attributes first."""
        names = [n for n in self.__dict__ if not n.startswith("_") and not _is_cached_property(type(self), n)]
        for cls in type(self).__mro__:
            if cls in (ConfigBase, object):
                continue
            names += [n for n, v in vars(cls).items()
                      if not n.startswith("_") and _is_plain_value(v) and n not in names]
        return names

    def mark_auxiliary(self, params: Iterable[str]) -> None:
        """Mark parameters as auxiliary: reading or changing them never re-runs a reactor.

        Raises ``ConfigError`` for a name that is not a parameter.
        """
        for name in params:
            if not self.has(name):
                self.__getattr__(name)
            self._pyplant_aux.add(name)

    def is_auxiliary(self, name: str) -> bool:
        return name in self._pyplant_aux

    def _bind(self, reader: Callable[[str, Any], None]) -> "ConfigBase":
        """A shallow copy whose reads call ``reader(name, value)`` and that rejects writes.

        Values cached by ``functools.cached_property`` are left behind: the property computes
        again on the copy, so the parameters it reads are recorded for the reactor.
        """
        clone = object.__new__(type(self))
        kind = type(self)
        clone.__dict__.update((k, v) for k, v in self.__dict__.items() if not _is_cached_property(kind, k))
        clone.__dict__["_pyplant_reader"] = reader
        return clone

    def __repr__(self) -> str:
        params = ", ".join(f"{n}={self.peek(n)!r}" for n in self.get_param_names())
        return f"{type(self).__name__}({params})"


def _is_plain_value(attr: Any) -> bool:
    """Class attributes that are parameters: not methods, properties or other descriptors
    (``functools.cached_property`` computes a value; it is not one)."""
    return not (callable(attr) or hasattr(type(attr), "__get__"))


def _is_cached_property(kind: type, name: str) -> bool:
    return name in tokens.cached_properties(kind)


def param_token(name: str, value: Any, code_hasher: Callable[[Callable], str],
                reactor: str | None = None) -> str:
    """The stable token of config parameter ``name`` (see ``tokens.stable_token``); functions
    and classes in it count by ``code_hasher``.

    Raises
    ------
    ConfigError
        naming the parameter (and the reactor reading it, when given) when the value has no
        stable token: an object that cannot be pickled and shows a memory address (a
        generator, a socket), or a structure nested too deeply.
    """
    try:
        return tokens.stable_token(value, code_hasher)
    except (TokenizationError, RecursionError, ValueError, OverflowError) as exc:
        where = f" (read by reactor '{reactor}')" if reactor else ""
        raise ConfigError(f"config parameter '{name}'{where} cannot be compared across runs: {exc}. "
                          f"Use plain data (numbers, strings, containers, arrays), a ConfigValue, "
                          f"or mark it auxiliary", reactor=reactor) from exc


class ConfigValue:
    """Base for plain-data objects used as config values (a model's hyper-parameters, ...).

    Its tokens and reprs are built from its attributes, so two equal ``ConfigValue`` objects
    never re-run a reactor, whatever their identity.
    """

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({attrs})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    __hash__ = None  # mutable plain data
