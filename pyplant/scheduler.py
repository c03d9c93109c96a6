"""The suspending scheduler: verifies traces, runs stale reactors, parks and resumes them.

Design (after "Build systems a la carte", Mokhov, Mitchell and Peyton Jones, 2018: a suspending
scheduler with verifying, constructive traces):

State of one session (one ``Plant`` between config changes)::

    nodes      {reactor name: Node}         status NEW -> CHECKING -> CACHED
                                                   NEW -> RUNNING  -> RAN
    stack      [Node]                       the top is advanced; a node waiting for a producer
                                            pushes it. An explicit stack, so a chain of 10,000
                                            reactors needs no Python recursion.
    available  {ingredient: (Version, producer Node)}   settled or already-sent ingredients

A scheduler lives for one ``run_reactor`` call, so a config edited in place between two calls
is seen. Loaded values outlive it in the plant's cache ``{(name, content hash, location):
value}``: versions never change, so a value is loaded once per plant object.

A CHECKING node walks its traces, most recent first. A trace verifies when its code hashes and
non-auxiliary config tokens equal the current ones and each input, once its producer is
settled, still has the recorded content hash. A producer that re-ran and produced the same
bytes therefore stops the wave (early cutoff), and an older trace can match again (config
A -> B -> A finds A's versions). When no trace verifies the node starts RUNNING.

A RUNNING node's generator is stepped until it yields a receive whose ingredient is not
available; the producer recorded in the metadata is pushed, or, when none is known, the next
reactor not yet settled in this session (discovery, each reactor at most once per session, so it
never loops). The target of ``run_reactor`` always runs.
"""
from __future__ import annotations

import ast
import enum
import functools
import inspect
import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator

import lmdb

from . import hashing
from .errors import (AllocationError, CorruptVersionError, PyPlantError, DependencyCycleError, DuplicateProducerError,
                     IngredientNotFoundError, ReactorProtocolError, WarehouseError)
from .pipework import Pipework, ReceiveRequest
from .reactor import _active, start_generator, subreactor_function
from .warehouse import Stored, Trace, Version

if TYPE_CHECKING:
    from .plant import Plant



# Older traces than this are not tried (config values switched back more than 64 times ago).
MAX_TRACES_CHECKED = 64


class Status(enum.Enum):
    NEW = "new"
    CHECKING = "checking"
    RUNNING = "running"
    RAN = "ran"
    CACHED = "cached"


@dataclass(eq=False)
class Node:
    """One reactor within a session."""
    name: str
    func: Callable
    status: Status = Status.NEW
    trace_ids: list[str] = field(default_factory=list)   # most recent first; loaded one by one
    checking: Trace | None = None    # the trace being verified (trace_ids[trace_index])
    trace_index: int = 0
    input_index: int = 0
    trace: Trace | None = None       # the settled trace (CACHED or RAN)
    reason: str | None = None        # why it ran
    forced: bool = False             # ran because forced, itself or upstream
    wanted_by: str | None = None     # "ingredient 'x' of reactor 'r'" when started by discovery
    run: "ReactorRun | None" = None


@dataclass(frozen=True)
class Need:
    """The node on top of the stack waits for ``producer``: to settle (pushed), to run now
    instead of finishing its check (``restart``), or to resume, moved to the top (``resume``)."""
    producer: Node
    restart: bool = False
    resume: bool = False


class ReactorRun:
    """One execution of a reactor: its generator and what it received, read, called and sent."""

    def __init__(self, scheduler: "Scheduler", node: Node):
        self.scheduler = scheduler
        self.node = node
        self.name = node.name
        self.reactor_name = node.name  # read by ConfigBase for error messages
        self.inputs: dict[str, str] = {}
        self.config_reads: dict[str, tuple[str, str]] = {}
        self.subreactors: dict[str, Callable] = {}
        self.outputs: dict[str, Stored] = {}
        self.allocations: dict[str, tuple[str, str, Any]] = {}
        self.temps: list[tuple[str, str]] = []
        self.pipe = Pipework(self)
        self.config = scheduler.plant.config._bind(self)
        self.generator: Generator | None = None
        self.awaiting: str | None = None
        self.started = time.time()
        self.elapsed = 0.0

    # called by ConfigBase on each read of a non-auxiliary parameter
    def __call__(self, param: str, value: Any) -> None:
        if param not in self.config_reads:
            self.config_reads[param] = (self.scheduler.config_token(param, value), hashing.short_repr(value))

    def read_config(self, param: str, register: bool) -> Any:
        config = self.scheduler.plant.config
        value = config.peek(param) if config.has(param) else self.config.__getattr__(param)
        if register and not config.is_auxiliary(param):
            self(param, value)
        return value

    def on_subreactor(self, name: str, key: str, func: Callable) -> None:
        self.subreactors[key] = func
        self.scheduler.plant._trigger_event("subreactor_started", name)

    def send(self, name: str, value: Any, key: str | None) -> None:
        self.scheduler.send(self, name, value, key)

    def allocate(self, name: str, key: str | None, temp: bool, **kwargs: Any) -> Any:
        return self.scheduler.allocate(self, name, key, temp, **kwargs)


class Scheduler:
    """Runs reactors for one session of a plant; see the module docstring."""

    def __init__(self, plant: "Plant"):
        self.plant = plant
        self.warehouse = plant.warehouse
        self.meta = plant.warehouse.metadata
        self.nodes: dict[str, Node] = {name: Node(name, func) for name, func in plant.reactors.items()}
        self.order = list(self.nodes.values())
        self.cursor = 0
        self.stack: list[Node] = []
        self.available: dict[str, tuple[Version, Node]] = {}
        self.values = plant._values
        self.touched: set[tuple] = set()  # version keys this run used; the rest leaves memory
        self.code_hashes: dict[str, str | None] = {}
        self.code_maps: dict[str, dict[str, str]] = {}
        self.mapper = plant._code_mapper()
        self.config_tokens: dict[str, str] = {}
        self.tried: dict[str, list[str]] = {}
        self.forced = plant._forced

    # --- the driving loop ---

    def run(self, name: str) -> None:
        node = self.nodes[name]
        self._start_running(node, reason="target of run_reactor")
        self.stack.append(node)
        try:
            while self.stack:
                top = self.stack[-1]
                need = self._advance(top)
                if need is None:
                    self.stack.pop()
                elif need.restart or need.resume:
                    self.stack.remove(need.producer)
                    if need.restart:
                        self._start_running(need.producer, reason="needed while verifying (trace cycle)")
                    self.stack.append(need.producer)
                else:
                    self._push(need.producer)
        except BaseException:
            self._abort()
            raise
        finally:
            self._forget_untouched()
            self.plant._last_run = {name: version for name, (version, _) in self.available.items()}

    def _forget_untouched(self) -> None:
        """Keep in memory only the values this run used: a notebook that tries 100 configs
        must not hold 100 versions of every ingredient."""
        for key in [k for k in self.values if k not in self.touched]:
            del self.values[key]

    def _push(self, node: Node) -> None:
        node.status = Status.CHECKING
        node.trace_ids = self.meta.trace_ids(node.name)[:MAX_TRACES_CHECKED]
        node.trace_index = node.input_index = 0
        node.checking = None
        self.stack.append(node)

    def _advance(self, node: Node) -> Need | None:
        if node.status is Status.CHECKING:
            return self._advance_check(node)
        if node.status is Status.RUNNING:
            return self._advance_run(node)
        return None

    def _abort(self) -> None:
        """After an exception: close every unfinished generator, free what it allocated."""
        for node in reversed(self.stack):
            run = node.run
            if node.status is Status.RUNNING and run is not None:
                if run.generator is not None:
                    try:
                        run.generator.close()
                    except BaseException as exc:  # the original error matters more
                        self.plant.logger.warning("reactor '%s' raised while closing: %r", node.name, exc)
                self._free(run, [(k, s) for k, s, _ in run.allocations.values()] + run.temps)
                for stored in run.outputs.values():  # files and specs of an unfinished version
                    self.warehouse.free(stored.version)
                self._drop_outputs(node)
            node.status, node.run = Status.NEW, None
        self.stack.clear()

    # --- verifying ---

    def _advance_check(self, node: Node) -> Need | None:
        if node.name in self.forced:
            return self._run_forced(node, "forced")
        while node.trace_index < len(node.trace_ids):
            trace = node.checking
            if trace is None or trace.trace_id != node.trace_ids[node.trace_index]:
                trace = node.checking = self.meta.trace(node.name, node.trace_ids[node.trace_index])
                if trace is None:  # unreadable: skip it
                    self._next_trace(node, "its trace was unreadable")
                    continue
            if node.input_index == 0:
                mismatch = self._code_mismatch(node, trace) or self._config_mismatch(trace)
                if mismatch:
                    self._next_trace(node, mismatch)
                    continue
            inputs = list(trace.inputs.items())
            while node.input_index < len(inputs):
                ingredient, content_hash = inputs[node.input_index]
                state = self._input_state(ingredient)
                if isinstance(state, Node):
                    return Need(state)
                upstream = self.available.get(ingredient, (None, None))[1]
                if upstream is not None and upstream.forced:
                    return self._run_forced(node, f"forced: upstream reactor '{upstream.name}' was forced")
                if state != content_hash:
                    break
                node.input_index += 1
            else:
                self._settle_cached(node, trace)
                return None
            self._next_trace(node, f"input '{ingredient}' changed" if state else
                             f"input '{ingredient}' is no longer produced")
        self._start_running(node, node.reason or "no trace yet")
        return self._advance_run(node)

    def _run_forced(self, node: Node, reason: str) -> Need | None:
        node.forced = True
        self._start_running(node, reason)
        return self._advance_run(node)

    def _next_trace(self, node: Node, reason: str) -> None:
        if node.trace_index == 0:
            node.reason = reason  # the most recent trace explains the re-run
        node.trace_index += 1
        node.input_index = 0

    def _input_state(self, ingredient: str) -> str | Node | None:
        """Content hash of a settled ingredient, the producer to settle first, or None."""
        entry = self.available.get(ingredient)
        if entry is not None:
            return entry[0].content_hash
        producer = self._recorded_producer(ingredient)
        if producer is not None and producer.status is Status.NEW:
            return producer
        return None

    def _code_mismatch(self, node: Node, trace: Trace) -> str | None:
        current = self._code_map(node)
        for label, recorded in trace.code.items():
            now = self._subreactor_hash(label) if label.startswith("sub:") else current.get(label)
            if now != recorded:
                return code_change_reason(node.name, label, recorded, now)
        for label in current.keys() - trace.code.keys():
            return code_change_reason(node.name, label, None, current[label])
        return None

    def _code_map(self, node: Node) -> dict[str, str]:
        """{label: hash} of the reactor's code and all user code it reaches (dependencies.py)."""
        code = self.code_maps.get(node.name)
        if code is None:
            info = getattr(node.func, "pyplant", None)
            if info is not None and info.version is not None and self.plant.functionHash is None:
                code = {"reactor": self.plant._code_hash(node.func)}  # pinned: helpers too
            else:
                code = self.mapper.code_map(node.func)
            self.code_maps[node.name] = code
        return code

    def _subreactor_hash(self, label: str) -> str | None:
        if label not in self.code_hashes:
            func = subreactor_function(label[4:])
            self.code_hashes[label] = None if func is None else self.plant._code_hash(func)
        return self.code_hashes[label]

    def _config_mismatch(self, trace: Trace) -> str | None:
        config = self.plant.config
        for param, (token, shown) in trace.config.items():
            if config.is_auxiliary(param):
                continue
            if not config.has(param):
                return f"config parameter '{param}' was removed"
            value = config.peek(param)
            if self.config_token(param, value) != token:
                return f"config parameter '{param}' changed from {shown} to {hashing.short_repr(value)}"
        return None

    def config_token(self, param: str, value: Any) -> str:
        token = self.config_tokens.get(param)
        if token is None:
            token = hashing.stable_token(value, self._deep_code_hash)
            self.config_tokens[param] = token
        return token

    def _deep_code_hash(self, func: Callable) -> str:
        """A callable in the config counts with all it reaches: closure cells, helpers, globals."""
        return hashing.combine("codemap", self.mapper.code_map(func).items())

    def _settle_cached(self, node: Node, trace: Trace) -> None:
        node.status, node.trace = Status.CACHED, trace
        if node.trace_index > 0:  # an older trace matched again: make it the latest
            self.meta.promote_trace(node.name, trace)
        for name, version in trace.outputs.items():
            self.available[name] = (version, node)
        self.plant._record_history(node, ran=False, started=time.time(), duration=0.0)
        self.plant.logger.debug("reactor '%s' is up to date (trace %s)", node.name, trace.trace_id[:8])

    # --- running ---

    def _start_running(self, node: Node, reason: str) -> None:
        node.status, node.reason = Status.RUNNING, reason
        node.run = ReactorRun(self, node)
        self._code_map(node)  # before the body runs: it may mutate the globals it reads
        self.plant.logger.info("running reactor '%s': %s", node.name, reason)

    def _advance_run(self, node: Node) -> Need | None:
        run = node.run
        value = None
        if run.generator is None:
            run.generator = start_generator(node.func, run.pipe, run.config)
            self.plant._trigger_event("reactor_started", node.name, node.func)
        elif run.awaiting is not None:
            value = self._receive(node, run.awaiting)
            if isinstance(value, Need):
                return value
        while True:
            name = self._step(run, value)
            if name is StopIteration:
                self._finish(node)
                return None
            value = self._receive(node, name)
            if isinstance(value, Need):
                return value

    def _step(self, run: ReactorRun, value: Any) -> Any:
        """Step the generator; returns the received name, None (bare yield) or StopIteration."""
        _active.append(run)
        began = time.perf_counter()
        try:
            request = run.generator.send(value)
        except StopIteration:
            return StopIteration
        except BaseException as exc:
            exc.add_note(f"(raised in reactor '{run.name}')")
            self.plant.logger.error("reactor '%s' raised %s: %s", run.name, type(exc).__name__, exc)
            raise
        finally:
            run.elapsed += time.perf_counter() - began
            _active.pop()
        self.plant._trigger_event("reactor_step", run.name)
        if request is None:
            return None  # a bare yield, answered with None
        if not isinstance(request, ReceiveRequest):
            raise ReactorProtocolError(
                f"reactor '{run.name}' yielded {request!r}; reactors may only yield "
                f"pipe.receive(name) (or use 'yield from' for subreactors)", reactor=run.name)
        return request.name

    def _receive(self, node: Node, name: str | None) -> Any:
        """The value of ``name`` for ``node``, or the ``Need`` to wait on (then ``awaiting``)."""
        run = node.run
        run.awaiting = None
        if name is None:  # bare yield
            return None
        if name in run.outputs:  # its own product, sent earlier in this run
            return run.outputs[name].value
        entry = self.available.get(name)
        if entry is None:
            need = self._find_producer(node, name)
            run.awaiting = name
            return need
        value = self._value(name)
        if isinstance(value, Need):
            run.awaiting = name
            return value
        run.inputs[name] = entry[0].content_hash
        return value

    def _find_producer(self, node: Node, name: str) -> Need:
        producer = self._recorded_producer(name)
        if producer is not None and producer is not node:
            if producer.status is Status.NEW:
                return Need(producer)
            if producer.status is Status.CHECKING:
                return Need(producer, restart=True)
        return self._discover(node, name, producer)

    def _discover(self, node: Node, name: str, recorded: Node | None) -> Need:
        """Start the next reactor not yet settled in this session, hoping it sends ``name``."""
        tried = self.tried.setdefault(name, [])
        while self.cursor < len(self.order):
            candidate = self.order[self.cursor]
            self.cursor += 1
            if candidate.status is Status.NEW:
                tried.append(candidate.name)
                candidate.wanted_by = f"producer of '{name}' for reactor '{node.name}'"
                self.plant.logger.debug("looking for a producer of '%s': trying reactor '%s'", name, candidate.name)
                return Need(candidate)
        unblocked = self._unblocked_below(node)
        if unblocked is not None:  # it may send `name` once resumed (first-run discovery order)
            return Need(unblocked, resume=True)
        waiting = recorded if recorded is not None and recorded.status is Status.RUNNING else None
        if waiting is None:  # first run, no record: does a waiting reactor's source send it?
            waiting = next((n for n in self.stack if n is not node and n.status is Status.RUNNING
                            and name in static_sends(n.func)), None)
        if waiting is not None and waiting is not node:
            cycle = [n.name for n in self.stack[self.stack.index(waiting):]] + [waiting.name]
            raise DependencyCycleError(
                f"dependency cycle: {' -> '.join(cycle)} (reactor '{node.name}' waits for "
                f"ingredient '{name}', which '{waiting.name}' sends only after it gets its inputs)",
                cycle=cycle, ingredient=name)
        settled = [n.name for n in self.order if n.status in (Status.RAN, Status.CACHED)]
        why = f" (started as a possible {node.wanted_by})" if node.wanted_by else ""
        raise IngredientNotFoundError(
            f"reactor '{node.name}'{why} receives ingredient '{name}', but no reactor sends it "
            f"(tried: {', '.join(tried) or 'none'}; ran or verified this session: "
            f"{', '.join(settled) or 'none'}). Was its producer added to the plant?",
            reactor=node.name, ingredient=name, tried=tried)

    def _unblocked_below(self, node: Node) -> Node | None:
        """A running reactor lower on the stack whose awaited ingredient has become available."""
        for other in reversed(self.stack):
            run = other.run
            if other is not node and other.status is Status.RUNNING and run is not None \
                    and run.awaiting is not None and run.awaiting in self.available:
                return other
        return None

    def _recorded_producer(self, ingredient: str) -> Node | None:
        name = self.meta.producer(ingredient)
        return self.nodes.get(name) if name is not None else None

    def _value(self, name: str) -> Any:
        version, producer = self.available[name]
        key = version_key(version)
        self.touched.add(key)
        if key in self.values:
            return self.values[key]
        try:
            value = self.warehouse.load(version)
        except CorruptVersionError as exc:
            self.plant.logger.warning("%s; re-running reactor '%s' to recompute it", exc, producer.name)
            self.warehouse.discard(version)
            self._invalidate(producer)
            return Need(producer)
        self.values[key] = value
        return value

    def _invalidate(self, node: Node) -> None:
        """A cached node's versions are damaged: forget its trace and verify it again."""
        if node.trace is not None:
            self.meta.forget_trace(node.name, node.trace.trace_id)
        self._drop_outputs(node)
        node.status, node.trace, node.reason = Status.NEW, None, "a stored version was missing or corrupted"

    def _drop_outputs(self, node: Node) -> None:
        for name in [n for n, (_, p) in self.available.items() if p is node]:
            version, _ = self.available.pop(name)
            self.values.pop(version_key(version), None)

    # --- sending and allocating ---

    def send(self, run: ReactorRun, name: str, value: Any, key: str | None) -> None:
        self._check_single_producer(run, name)
        allocated = run.allocations.pop(name, None)
        if key is None:  # the allocated value itself (its path) keeps its allocated type
            key = allocated[0] if allocated and _is_allocated(value, allocated[2]) \
                else self.warehouse.infer_type(value)
        self.warehouse.check_type(key)
        try:
            stored = self.warehouse.store(name, value, key, allocated[1] if allocated else None,
                                          reactor=run.name)
        except PyPlantError:
            raise
        except Exception as exc:
            exc.add_note(f"(while reactor '{run.name}' sent ingredient '{name}')")
            raise
        run.outputs[name] = stored
        self.available[name] = (stored.version, run.node)
        self.values[version_key(stored.version)] = stored.value
        self.touched.add(version_key(stored.version))

    def allocate(self, run: ReactorRun, name: str, key: str | None, temp: bool, **kwargs: Any) -> Any:
        if key is None:
            raise AllocationError(f"reactor '{run.name}' must give a type to allocate '{name}'",
                                  reactor=run.name, ingredient=name)
        if not temp:
            self._check_single_producer(run, name)
        try:
            value, storage = self.warehouse.allocate(name, key, temp=temp, **kwargs)
        except (AllocationError, WarehouseError) as exc:
            raise type(exc)(f"reactor '{run.name}' cannot allocate ingredient '{name}': {exc}",
                            reactor=run.name, ingredient=name) from exc
        except Exception as exc:
            exc.add_note(f"(while reactor '{run.name}' allocated ingredient '{name}')")
            raise
        if temp:
            run.temps.append((key, storage))
        else:
            run.allocations[name] = (key, storage, value)
        return value

    def _check_single_producer(self, run: ReactorRun, name: str) -> None:
        entry = self.available.get(name)
        if entry is not None and entry[1] is not run.node:
            raise DuplicateProducerError(
                f"reactors '{entry[1].name}' and '{run.name}' both send ingredient '{name}'; "
                f"an ingredient has exactly one producer", reactor=run.name, ingredient=name)

    # --- finishing ---

    def _finish(self, node: Node) -> None:
        run = node.run
        for name, (key, storage, value) in list(run.allocations.items()):
            self.send(run, name, value, key)  # allocated but not sent: send it now
        code = dict(self._code_map(node))
        code.update({f"sub:{n}": self.plant._code_hash(f) for n, f in run.subreactors.items()})
        trace_id = hashing.combine("trace", [("reactor", node.name)]
                                   + [("code",) + kv for kv in code.items()]
                                   + [("config", p, t) for p, (t, _) in run.config_reads.items()]
                                   + [("input",) + kv for kv in run.inputs.items()])
        outputs = {name: stored.version for name, stored in run.outputs.items()}
        trace = Trace(node.name, trace_id, code, dict(run.config_reads), dict(run.inputs), outputs,
                      finished=time.time(), duration=run.elapsed)
        history = self.plant._record_history(node, ran=True, started=run.started, duration=run.elapsed)
        try:
            self.meta.commit_trace(trace, history)
        except lmdb.Error as exc:  # a full disk, a read-only mount: what finished before stays
            raise WarehouseError(f"cannot record the trace of reactor '{node.name}': {exc}",
                                 reactor=node.name) from exc
        self._free(run, run.temps)
        node.status, node.trace, node.run = Status.RAN, trace, None
        self.forced.discard(node.name)
        self.plant.logger.info("reactor '%s' finished in %.3f s", node.name, run.elapsed)
        self.plant._trigger_event("reactor_finished", node.name)

    def _free(self, run: ReactorRun, allocations: list[tuple[str, str]]) -> None:
        for key, storage in allocations:
            self.warehouse.deallocate(key, storage)

    # --- outside a run ---

    def latest_value(self, name: str) -> Any:
        """The version of ``name`` this plant's last run used or made, else the latest one
        stored (another process may have stored a newer one under another config)."""
        version = self.plant._last_run.get(name)
        if version is None:
            producer = self.meta.producer(name)
            traces = self.meta.traces(producer, limit=1) if producer else []
            if not traces or name not in traces[0].outputs:
                raise IngredientNotFoundError(f"ingredient '{name}' is not in the warehouse",
                                              reactor=producer, ingredient=name)
            version = traces[0].outputs[name]
        key = version_key(version)
        if key not in self.values:
            self.values[key] = self.warehouse.load(version)
        return self.values[key]


@functools.lru_cache(maxsize=4096)
def static_sends(func: Callable) -> frozenset[str]:
    """Names a function sends or allocates as string literals (``pipe.send('x', ...)``).

    Only used to tell a dependency cycle from a missing ingredient on a first run, when no
    trace says who produces what.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return frozenset()
    return frozenset(
        node.args[0].value for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("send", "allocate") and node.args
        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def code_change_reason(reactor: str, label: str, before: str | None, now: str | None) -> str:
    """'code changed: ...' naming the function, constant or library that changed."""
    kind, _, what = label.partition(":")
    if label == "reactor":
        return f"code changed: reactor '{reactor}'"
    if before is None:
        return f"code changed: '{reactor}' now depends on {what}"
    if now is None:
        return f"code changed: {what} is gone"
    if kind == "lib":
        return f"library {what} changed version {before} -> {now}"
    noun = {"fn": "function", "cls": "class", "const": "constant", "sub": "subreactor"}.get(kind, kind)
    return f"code changed: {noun} {what}"


def _is_allocated(value: Any, allocated: Any) -> bool:
    """True when ``value`` is what ``allocate`` returned (the object, or the same path)."""
    if value is allocated:
        return True
    return isinstance(value, (str, os.PathLike)) and isinstance(allocated, str) \
        and os.fspath(value) == allocated


def version_key(version: Version) -> tuple[str, str, str | None]:
    """Identifies a stored version; versions are immutable, so their values can be cached."""
    return (version.name, version.content_hash, version.location)
