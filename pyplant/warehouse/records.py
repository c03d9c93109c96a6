"""Typed metadata records, defined once: what the warehouse keeps about versions, traces,
reactors, runs and leases.

Every record is a frozen dataclass with ``to_record()`` (a plain dict of str, int, float,
bytes, lists, tuples and dicts: what the metadata backend stores) and ``from_record(rec)``
(the reverse). Plain dicts, not pickled classes, so that renaming or moving a class never
makes a plant directory unreadable. ``from_record`` accepts every record written since the
LMDB layout exists (fields added later take their defaults), ignores keys it does not know
(written by a newer pyplant), and raises ``RecordError`` for a record of the wrong shape, which
the backend then skips with a warning, as damaged.

Times are Unix times in seconds (``time.time()``), durations seconds. Hashes are hex digests
of ``hashing.HEX_DIGEST_CHARS`` (32) characters (xxh3-128).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

from .. import hashing

__all__ = ["RecordError", "Version", "Trace", "HistoryRecord", "ReactorRecord", "LeaseRecord",
           "code_digest", "trace_index_key", "index_key_of", "params_of"]


class RecordError(ValueError):
    """A stored record of the wrong shape (a missing field, a field of the wrong type)."""


_REQUIRED = object()
_NONE = type(None)
_NUMBER = (int, float)
_STR = {str}

# (field, accepted types, default): _REQUIRED for a required field; a type (dict, list) as the
# default makes a fresh one per record.
_Spec = tuple[tuple[str, Any, Any], ...]


def _build(cls: type, rec: Any, kind: str, spec: _Spec) -> Any:
    """An instance of the frozen dataclass ``cls`` from the mapping ``rec``, each field checked
    against ``spec``; ``RecordError`` for a record of the wrong shape. Fields are set on the
    instance's ``__dict__`` directly (one pass: records are decoded on every warm run)."""
    if not isinstance(rec, dict):
        raise RecordError(f"a {kind} record must be a dict, got {type(rec).__name__}")
    values = {}
    get = rec.get
    for name, types, default in spec:
        value = get(name, _REQUIRED)
        if value is _REQUIRED:
            if default is _REQUIRED:
                raise RecordError(f"{kind} record: field {name!r} is missing")
            value = default() if isinstance(default, type) else default
        elif not isinstance(value, types):
            raise RecordError(f"{kind} record: field {name!r} has type {type(value).__name__}")
        values[name] = value
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


@dataclass(frozen=True)
class Version:
    """One stored value of an ingredient; immutable, shared by every trace that made it.

    Attributes
    ----------
    name : str
        The ingredient's name.
    type : str
        The type key of the codec that stored it (``'simple'``, ``'list'``, ``'object'``,
        ``'array'``, ``'file'``, a spec's ``get_name()``, a registered codec's ``key``).
    content_hash : str
        Hex digest (32 characters) of the content; for a spec without ``content_hash``, the
        digest of its storage name (unique per version).
    location : str or None
        Where it is stored, relative to the plant directory: a blob (``blobs/ab/<hash>.<sfx>``),
        a file (``files/<storage>/<name>``), a spec's storage name (``<ingredient>@<16 hex>``);
        None when the value is ``inline``.
    inline : bytes or None
        The encoded value itself, for values stored in the record (pickles below 64 KiB).
    meta : dict or None
        What the codec needs to load it (``{'codec': 'pickle'}``; what a spec's ``store``
        returned).
    nbytes : int
        Size in bytes: of the encoded value, the array's data, the file, or the spec's files.
    files : dict or None
        For spec versions: ``{location: [size in bytes, content hash or None]}`` of every file
        the spec wrote, to tell damage on disk from a bug in the spec (hashes of files up to
        64 MiB); None for other types and versions stored before it existed.
    """
    name: str
    type: str
    content_hash: str
    location: str | None = None
    inline: bytes | None = None
    meta: dict | None = None
    nbytes: int = 0
    files: dict | None = None

    def to_record(self) -> dict:
        """This version as a plain dict (``files`` only when set: older readers accept it)."""
        rec = {"name": self.name, "type": self.type, "content_hash": self.content_hash,
               "location": self.location, "inline": self.inline, "meta": self.meta,
               "nbytes": self.nbytes}
        if self.files is not None:
            rec["files"] = self.files
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> "Version":
        """The version stored as ``rec``; raises ``RecordError`` for a record of the wrong shape."""
        return _build(cls, rec, "version", _VERSION)


_VERSION: _Spec = (("name", str, _REQUIRED), ("type", str, _REQUIRED), ("content_hash", str, _REQUIRED),
                   ("location", (str, _NONE), None), ("inline", (bytes, _NONE), None),
                   ("meta", (dict, _NONE), None), ("nbytes", int, 0), ("files", (dict, _NONE), None))


@dataclass(frozen=True)
class Trace:
    """What a finished reactor leaves: enough to decide later whether it is up to date.

    Attributes
    ----------
    reactor : str
        The reactor's name.
    trace_id : str
        Hex digest (32 characters) of everything below but times: equal runs, equal ids.
    code : dict
        ``{label: code hash}``: ``'reactor'``, every user function, constant and library it
        reaches (``'name:...'``, ``'lib:...'``), and ``'sub:<name>'`` per subreactor called.
    config : dict
        ``{parameter: (stable token, short repr)}`` of the non-auxiliary parameters read.
    inputs : dict
        ``{slot: content hash}`` received (its own products excluded). A reactor's slots are
        its ingredient names; a step call's are its parameters (see ``engine/tasks.py``).
    outputs : dict
        ``{slot: Version}`` sent.
    finished : float
        Unix time in seconds when the reactor finished.
    duration : float
        Seconds spent inside the reactor's body.
    files : dict
        ``{real path: content hash}`` of external files read (``tracking.py``).
    dirs : dict
        ``{real path: listing hash}`` of directories listed.
    env : dict
        ``{variable: value, or None when unset}`` of environment variables read.
    names : dict
        ``{slot: ingredient}``: the ingredient each output slot was sent as, where they differ
        (a step call's ``return`` slot is sent as ``train`` or ``train_1``).
    """
    reactor: str
    trace_id: str
    code: dict[str, str]
    config: dict[str, tuple[str, str]]
    inputs: dict[str, str]
    outputs: dict[str, Version]
    finished: float = 0.0
    duration: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def published(self) -> dict[str, str]:
        """``{slot: ingredient name}`` of every output."""
        return {slot: self.names.get(slot, slot) for slot in self.outputs}

    def to_record(self) -> dict:
        """This trace as a plain dict (versions as dicts)."""
        rec = {f.name: getattr(self, f.name) for f in _TRACE_FIELDS}
        rec["outputs"] = {k: v.to_record() for k, v in self.outputs.items()}
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> "Trace":
        """The trace stored as ``rec``; raises ``RecordError`` for a record of the wrong shape
        (a damaged version inside it included)."""
        trace = _build(cls, rec, "trace", _TRACE)
        trace.__dict__["outputs"] = {k: Version.from_record(v) for k, v in trace.outputs.items()}
        return trace

    @property
    def index_key(self) -> str:
        """The key this trace is found by in the trace index (``trace_index_key``)."""
        return index_key_of(self)

    @property
    def params(self) -> tuple[str, ...]:
        """The sorted names of the config parameters it read (its "shape" in the index)."""
        return params_of(self)


_TRACE_FIELDS = fields(Trace)
_TRACE: _Spec = (("reactor", str, _REQUIRED), ("trace_id", str, _REQUIRED), ("code", dict, _REQUIRED),
                 ("config", dict, _REQUIRED), ("inputs", dict, _REQUIRED), ("outputs", dict, _REQUIRED),
                 ("finished", _NUMBER, 0.0), ("duration", _NUMBER, 0.0), ("files", dict, dict),
                 ("dirs", dict, dict), ("env", dict, dict), ("names", dict, dict))


@dataclass(frozen=True)
class HistoryRecord:
    """One reactor run or verification, as kept in the plant's history.

    Attributes
    ----------
    reactor : str
        The reactor's name.
    started : float
        Unix time in seconds when it started (or was found up to date).
    duration : float
        Seconds spent inside its body (0 when cached).
    ran : bool
        False when it was verified up to date instead of run.
    reason : str or None
        Why it ran ("config parameter 'C' changed from 1.0 to 0.1"), or ``'up to date'``.
    """
    reactor: str
    started: float
    duration: float = 0.0
    ran: bool = True
    reason: str | None = None

    def to_record(self) -> dict:
        """This record as a plain dict."""
        return {"reactor": self.reactor, "started": self.started, "duration": self.duration,
                "ran": self.ran, "reason": self.reason}

    @classmethod
    def from_record(cls, rec: Any) -> "HistoryRecord":
        """The record stored as ``rec`` (a ``HistoryRecord`` is returned as it is); raises
        ``RecordError`` for a record of the wrong shape."""
        if isinstance(rec, HistoryRecord):
            return rec
        return _build(cls, rec, "history", _HISTORY)


_HISTORY: _Spec = (("reactor", str, _REQUIRED), ("started", _NUMBER, _REQUIRED), ("duration", _NUMBER, 0.0),
                   ("ran", bool, True), ("reason", (str, _NONE), None))


@dataclass(frozen=True)
class ReactorRecord:
    """Per reactor: its traces and what its index knows about them.

    Attributes
    ----------
    traces : list of str
        Trace ids, most recent first.
    used : dict
        ``{trace id: Unix time in seconds}`` when each trace last ran or matched again.
    shapes : list of list of str, or None
        The sets of parameter names its traces read (``Trace.params``), so that a lookup in
        the trace index needs no scan; None for a record written before the index existed
        (its traces are indexed on its next commit).
    invalidated : str or None
        Why its traces were invalidated, until it commits a new trace.
    """
    traces: list[str]
    used: dict[str, float] = field(default_factory=dict)
    shapes: list[list[str]] | None = None
    invalidated: str | None = None

    def to_record(self) -> dict:
        """This record as a plain dict (``shapes``/``invalidated`` only when set)."""
        rec: dict[str, Any] = {"traces": list(self.traces), "used": dict(self.used)}
        if self.shapes is not None:
            rec["shapes"] = [list(s) for s in self.shapes]
        if self.invalidated is not None:
            rec["invalidated"] = self.invalidated
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> "ReactorRecord":
        """The record stored as ``rec``; raises ``RecordError`` for a record of the wrong shape."""
        record = _build(cls, rec, "reactor", _REACTOR)
        if not set(map(type, record.traces)) <= _STR:
            raise RecordError("reactor record: a trace id that is not a str")
        return record


_REACTOR: _Spec = (("traces", list, _REQUIRED), ("used", dict, dict), ("shapes", (list, _NONE), None),
                   ("invalidated", (str, _NONE), None))


@dataclass(frozen=True)
class LeaseRecord:
    """A live plant as GC sees it (``leases.py``).

    Attributes
    ----------
    pid : int
        Its process id.
    started : float
        Unix time in seconds when its lease was created.
    held : frozenset of str
        Every location it recorded (loaded, allocated, written or reused), relative to the
        plant directory.
    """
    pid: int
    started: float
    held: frozenset[str] = frozenset()

    def header(self) -> dict:
        """The first line of a lease journal, as a dict (JSON-encoded by ``leases.py``)."""
        return {"pid": self.pid, "started": self.started}

    @classmethod
    def from_lines(cls, header: Any, locations: Iterable[Any]) -> "LeaseRecord":
        """A lease from its decoded header and journal lines (entries that are not a str are
        ignored); raises ``RecordError`` for a header of the wrong shape."""
        if not isinstance(header, dict) or not isinstance(header.get("pid"), int) \
                or not isinstance(header.get("started"), _NUMBER):
            raise RecordError(f"a lease header must hold an int pid and a start time, got {header!r}")
        return cls(header["pid"], float(header["started"]),
                   frozenset(loc for loc in locations if isinstance(loc, str)))


# --- the trace index --------------------------------------------------------------------------

def code_digest(code: Mapping[str, str]) -> str:
    """One hash (32 hex digits) of a code map, without subreactor labels (known only after a run)."""
    return hashing.combine("code-map", [(k, v) for k, v in code.items() if not k.startswith("sub:")])


def trace_index_key(code_map_digest: str, config_tokens: Mapping[str, str]) -> str:
    """What a trace is looked up by: the digest of its code map (``code_digest``) and the
    tokens of the config parameters it read. Equal keys: code and config verify."""
    return hashing.combine("trace-index", [("code", code_map_digest)]
                           + [("config", p, t) for p, t in config_tokens.items()])


def index_key_of(trace: Trace) -> str:
    """The index key of a recorded trace."""
    return trace_index_key(code_digest(trace.code), {p: t for p, (t, _) in trace.config.items()})


def params_of(trace: Trace) -> tuple[str, ...]:
    """The sorted names of the config parameters a trace read."""
    return tuple(sorted(trace.config))
