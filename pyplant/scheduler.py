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

from . import collector, hashing, static, tracking
from .errors import (AllocationError, CorruptVersionError, PyPlantError, DependencyCycleError, DuplicateProducerError,
                     IngredientNotFoundError, ReactorProtocolError, WarehouseError)
from .config import param_token
from .pipework import Pipework, ReceiveRequest
from .reactor import SubreactorCall, start_generator, subreactor_function
from .running import active_run
from .warehouse import Stored, Trace, Version
from .warehouse.metadata import code_digest, trace_index_key

if TYPE_CHECKING:
    from .plant import Plant



# 'Why it re-ran' compares with this many recent traces, and names at most this many differences.
EXPLAIN_TRACES = 16
MAX_REASONS = 6


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
    latest_trace: str | None = None  # id of the reactor's most recent trace when checked
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
        self.unstarted_calls: set[SubreactorCall] = set()  # called without `yield from` so far
        self.unyielded: dict[int, ReceiveRequest] = {}     # pipe.receive(...) not yet yielded
        self.outputs: dict[str, Stored] = {}
        self.allocations: dict[str, tuple[str, str, Any]] = {}
        self.temps: list[tuple[str, str]] = []
        self.pipe = Pipework(self)
        self.config = scheduler.plant.config._bind(self)
        self.external = scheduler.plant._input_recorder()  # files and variables it reads
        self.generator: Generator | None = None
        self.awaiting: str | None = None
        self.started = time.time()
        self.elapsed = 0.0

    # called by ConfigBase on each read of a non-auxiliary parameter
    def __call__(self, param: str, value: Any) -> None:
        if param not in self.config_reads:
            self.config_reads[param] = (self.scheduler.config_token(param, value, self.name),
                                        hashing.short_repr(value))

    def read_config(self, param: str, register: bool) -> Any:
        config = self.scheduler.plant.config
        value = config.peek(param) if config.has(param) else self.config.__getattr__(param)
        if register and not config.is_auxiliary(param):
            self(param, value)
        return value

    def on_subreactor_call(self, call: SubreactorCall) -> None:
        self.unstarted_calls.add(call)

    def on_subreactor(self, name: str, key: str, func: Callable, call: SubreactorCall) -> None:
        self.unstarted_calls.discard(call)
        self.subreactors[key] = func
        self.scheduler.plant._trigger_event("subreactor_started", name)

    def track_file(self, path: Any) -> None:
        if self.external is not None:
            self.external.track_file(path)

    def on_receive(self, request: ReceiveRequest) -> None:
        self.unyielded[id(request)] = request

    def check_protocol(self) -> None:
        """At the end of the body: every receive was yielded, every subreactor run.

        Raises
        ------
        ReactorProtocolError
            naming the forgotten ``yield`` or ``yield from``.
        """
        if self.unyielded:
            name = next(iter(self.unyielded.values())).name
            raise ReactorProtocolError(
                f"reactor '{self.name}' called pipe.receive('{name}') without yield; write "
                f"`x = yield pipe.receive('{name}')`", reactor=self.name, ingredient=name)
        if self.unstarted_calls:
            sub = next(iter(self.unstarted_calls)).name
            raise ReactorProtocolError(
                f"reactor '{self.name}' called subreactor '{sub}' without 'yield from', so it "
                f"never ran; write `result = yield from {sub}(...)`", reactor=self.name)

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
        self.code_digests: dict[str, str] = {}  # {reactor: code_digest of its code map}
        self.mapper = plant._code_mapper()
        self.config_tokens: dict[str, str] = {}
        self.static_io: dict[str, static.StaticIO] = {}   # {reactor: names in its source}
        self.senders: dict[str, list[Node]] = {}          # {ingredient: reactors sending it}
        self.producers: dict[str, str] | None = None      # {ingredient: recorded producer}
        self.tried: dict[str, list[str]] = {}
        self.forced = plant._forced

    # --- the driving loop ---

    def run(self, name: str) -> None:
        with collector.paused():  # user code runs with the collector resumed (_step)
            self._run(name)

    def _run(self, name: str) -> None:
        node = self.nodes[name]
        for each in self.order:  # before any body runs: module state is still import-time state
            self._code_map(each)
        self._read_sources()
        self._check_producers(node)
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

    def _read_sources(self) -> None:
        """Static sends and receives of every reactor; two literal senders of one name are
        refused before any work (``DuplicateProducerError``). The sends of a reactor follow
        from the sources its code map covers, so they are memoized under its code digest, and
        the whole table under the digests of all reactors (one read on a warm run)."""
        digests = {n.name: self._code_map(n) for n in self.order if self._source_derived(n)}
        self.static_io = static.load_table(self.meta, digests)
        if self.static_io is None:
            scope = self.plant.codeScope
            reached = {n.name: static.reached_functions(n.func, scope.is_user_module) for n in self.order}
            self.static_io = static.reactor_ios(reached, self.meta)
            static.store_table(self.meta, digests, self.static_io)
        for node in self.order:
            for name in self.static_io[node.name].sends:
                self.senders.setdefault(name, []).append(node)
        for name, nodes in self.senders.items():
            if len(nodes) > 1:
                a, b = nodes[0].name, nodes[1].name
                raise DuplicateProducerError(
                    f"reactors '{a}' and '{b}' both send ingredient '{name}'; an ingredient has "
                    f"exactly one producer", reactor=b, ingredient=name)

    def _check_producers(self, target: Node) -> None:
        """Every literal receive upstream of ``target`` has a possible producer, else fail now
        (a typo must not cost the hours of work the reactors before it would take)."""
        if any(io.dynamic for io in self.static_io.values()):
            return  # some reactor may send any name
        seen, pending = {target.name}, [target]
        while pending:
            node = pending.pop()
            for name in sorted(self.static_io[node.name].receives):
                producers = self.senders.get(name) or self._producer_candidates(name)
                if not producers:
                    raise self._not_found(node, name, tried=[])
                for producer in producers:
                    if producer.name not in seen:
                        seen.add(producer.name)
                        pending.append(producer)

    def _producer_candidates(self, ingredient: str) -> list[Node]:
        """Who may produce ``ingredient`` now: its recorded producer, then the reactors whose
        source sends it (a producer renamed or split keeps its consumers' traces useful)."""
        candidates = list(self.senders.get(ingredient, ()))
        recorded = self._recorded_producer(ingredient)
        if recorded is not None and recorded not in candidates:
            candidates.insert(0, recorded)
        return candidates

    def _not_found(self, node: Node, name: str, tried: list[str]) -> IngredientNotFoundError:
        settled = [n.name for n in self.order if n.status in (Status.RAN, Status.CACHED)]
        why = f" (started as a possible {node.wanted_by})" if node.wanted_by else ""
        known = set(self.senders) | set(self.available) | set(self.meta.ingredient_names())
        return IngredientNotFoundError(
            f"reactor '{node.name}'{why} receives ingredient '{name}', but no reactor sends it"
            f"{static.did_you_mean(name, known)} (tried: {', '.join(tried) or 'none'}; ran or "
            f"verified this session: {', '.join(settled) or 'none'}). Was its producer added "
            f"to the plant?", reactor=node.name, ingredient=name, tried=tried)

    def _forget_untouched(self) -> None:
        """Keep in memory only the values this run used: a notebook that tries 100 configs
        must not hold 100 versions of every ingredient."""
        for key in [k for k in self.values if k not in self.touched]:
            del self.values[key]

    def _push(self, node: Node) -> None:
        node.status = Status.CHECKING
        node.trace_ids = self._candidate_traces(node)
        node.trace_index = node.input_index = 0
        node.checking = None
        self.stack.append(node)

    def _candidate_traces(self, node: Node) -> list[str]:
        """Ids of the traces whose code and config equal the current ones, most recently used
        first, found through the trace index (one lookup per set of parameters the reactor
        has read), so a return to any stored config costs no scan of older traces."""
        config = self.plant.config
        code = self._code_digest(node)

        def key_of(params: tuple[str, ...]) -> str | None:
            if not all(config.has(p) and not config.is_auxiliary(p) for p in params):
                return None  # an auxiliary or removed parameter: not found by key
            tokens = {p: self.config_token(p, config.peek(p), node.name) for p in params}
            return trace_index_key(code, tokens)

        found, node.latest_trace = self.meta.candidate_traces(node.name, key_of)
        return found

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
                    self._next_trace(node, None)
                    continue
            if node.input_index == 0:
                mismatch = self._code_mismatch(node, trace) or self._config_mismatch(trace) \
                    or self._external_mismatch(trace)
                if mismatch:
                    self._next_trace(node, None)  # explained by _why_stale if nothing matches
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
        self._start_running(node, node.reason or self._why_stale(node))
        return self._advance_run(node)

    def _run_forced(self, node: Node, reason: str) -> Need | None:
        node.forced = True
        self._start_running(node, reason)
        return self._advance_run(node)

    def _next_trace(self, node: Node, reason: str | None) -> None:
        """Try the next candidate; ``reason`` is why this one failed on its inputs (its code
        and config matched, so it explains the re-run best)."""
        if reason is not None and node.reason is None:
            node.reason = reason
        node.trace_index += 1
        node.input_index = 0

    def _input_state(self, ingredient: str) -> str | Node | None:
        """Content hash of a settled ingredient, the producer to settle first, or None."""
        entry = self.available.get(ingredient)
        if entry is not None:
            return entry[0].content_hash
        return next((p for p in self._producer_candidates(ingredient) if p.status is Status.NEW), None)

    def _code_mismatch(self, node: Node, trace: Trace) -> str | None:
        return next(iter(self._code_differences(node, trace)), None)

    def _code_differences(self, node: Node, trace: Trace) -> list[str]:
        current = self._code_map(node)
        found = []
        for label, recorded in trace.code.items():
            now = self._subreactor_hash(label) if label.startswith("sub:") else current.get(label)
            if now != recorded:
                found.append(code_change_reason(node.name, label, recorded, now))
        for label in sorted(current.keys() - trace.code.keys()):
            found.append(code_change_reason(node.name, label, None, current[label]))
        return found

    def _code_map(self, node: Node) -> dict[str, str]:
        """{label: hash} of the reactor's code and all user code it reaches (dependencies.py).
        All reactors are mapped together, before any runs: what one mutates is state for all."""
        if not self.code_maps:
            self.code_maps = self.mapper.code_maps({n.name: n.func for n in self.order})
        return self.code_maps[node.name]

    def _code_digest(self, node: Node) -> str:
        digest = self.code_digests.get(node.name)
        if digest is None:
            digest = self.code_digests[node.name] = code_digest(self._code_map(node))
        return digest

    def _source_derived(self, node: Node) -> bool:
        """True when the code map follows the source (no functionHash, no pinned version), so
        facts read from the source can be memoized by it."""
        info = getattr(node.func, "pyplant", None)
        return self.plant.functionHash is None and (info is None or info.version is None)

    def _subreactor_hash(self, label: str) -> str | None:
        if label not in self.code_hashes:
            func = subreactor_function(label[4:])
            self.code_hashes[label] = None if func is None else self.plant._code_hash(func)
        return self.code_hashes[label]

    def _config_mismatch(self, trace: Trace) -> str | None:
        return next(iter(self._config_differences(trace)), None)

    def _config_differences(self, trace: Trace) -> list[str]:
        config = self.plant.config
        found = []
        for param, (token, shown) in trace.config.items():
            if config.is_auxiliary(param):
                continue
            if not config.has(param):
                found.append(f"config parameter '{param}' was removed")
                continue
            value = config.peek(param)
            if self.config_token(param, value, trace.reactor) != token:
                found.append(f"config parameter '{param}' changed from {shown} to {hashing.short_repr(value)}")
        return found

    def _external_mismatch(self, trace: Trace) -> str | None:
        return next(iter(self._external_differences(trace)), None)

    def _external_differences(self, trace: Trace) -> list[str]:
        """How the files, directories or environment variables the trace read differ now."""
        found = [f"environment variable {variable} changed"
                 for variable, value in trace.env.items() if os.environ.get(variable) != value]
        hashes = self.plant._file_hashes
        for path, digest in trace.files.items():
            now = hashes.digest(path)
            if now != digest:
                shown = tracking.display_path(path)
                found.append(f"input file {shown} is gone" if now is None else f"input file {shown} changed")
        for path, digest in trace.dirs.items():
            if tracking.listing_hash(path) != digest:
                found.append(f"directory listing of {tracking.display_path(path)} changed")
        return found

    def _input_differences(self, trace: Trace) -> list[str]:
        """Inputs whose producers are settled this session and whose content differs."""
        found = []
        for ingredient, content_hash in trace.inputs.items():
            entry = self.available.get(ingredient)
            if entry is not None and entry[0].content_hash != content_hash:
                found.append(f"input '{ingredient}' changed")
        return found

    def _why_stale(self, node: Node) -> str:
        """Every difference against the closest of the reactor's recent traces: the one with
        the fewest (code, config, files and variables, settled inputs)."""
        best: list[str] | None = None
        for trace in self.meta.traces(node.name, limit=EXPLAIN_TRACES):
            found = (self._code_differences(node, trace) + self._config_differences(trace)
                     + self._external_differences(trace) + self._input_differences(trace))
            if found and (best is None or len(found) < len(best)):
                best = found
        if best is None:
            return self.meta.invalidated(node.name) or "no trace yet"
        shown = best[:MAX_REASONS] + ([f"and {len(best) - MAX_REASONS} more"] if len(best) > MAX_REASONS else [])
        return "; ".join(shown)

    def config_token(self, param: str, value: Any, reactor: str | None = None) -> str:
        token = self.config_tokens.get(param)
        if token is None:
            token = param_token(param, value, self._deep_code_hash, reactor)
            self.config_tokens[param] = token
        return token

    def _deep_code_hash(self, func: Callable) -> str:
        """A callable in the config counts with all it reaches: closure cells, helpers, globals."""
        return hashing.combine("codemap", self.mapper.code_map(func).items())

    def _settle_cached(self, node: Node, trace: Trace) -> None:
        node.status, node.trace = Status.CACHED, trace
        if trace.trace_id != node.latest_trace:  # an older trace matched again: make it the latest
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
        token = active_run.set(run)
        began = time.perf_counter()
        try:
            with tracking.stepping(run.external), collector.resumed():
                request = run.generator.send(value)
        except StopIteration:
            return StopIteration
        except BaseException as exc:
            exc.add_note(f"(raised in reactor '{run.name}')")
            self.plant.logger.error("reactor '%s' raised %s: %s", run.name, type(exc).__name__, exc)
            raise
        finally:
            run.elapsed += time.perf_counter() - began
            active_run.reset(token)
        self.plant._trigger_event("reactor_step", run.name)
        if request is None:
            return None  # a bare yield, answered with None
        if not isinstance(request, ReceiveRequest):
            raise ReactorProtocolError(
                f"reactor '{run.name}' yielded {request!r}; reactors may only yield "
                f"pipe.receive(name) (or use 'yield from' for subreactors)", reactor=run.name)
        run.unyielded.pop(id(request), None)
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
        candidates = [p for p in self._producer_candidates(name) if p is not node]
        for producer in candidates:
            if producer.status is Status.NEW:
                return Need(producer)
            if producer.status is Status.CHECKING:
                return Need(producer, restart=True)
        return self._discover(node, name, self._recorded_producer(name))

    def _discover(self, node: Node, name: str, recorded: Node | None) -> Need:
        """Start the next reactor not yet settled in this session that may send ``name``:
        one whose source sends names built at run time (see ``static.py``)."""
        tried = self.tried.setdefault(name, [])
        while self.cursor < len(self.order):
            candidate = self.order[self.cursor]
            self.cursor += 1
            if candidate.status is Status.NEW and self.static_io[candidate.name].dynamic:
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
                            and name in self.static_io[n.name].sends), None)
        if waiting is not None and waiting is not node:
            cycle = [n.name for n in self.stack[self.stack.index(waiting):]] + [waiting.name]
            raise DependencyCycleError(
                f"dependency cycle: {' -> '.join(cycle)} (reactor '{node.name}' waits for "
                f"ingredient '{name}', which '{waiting.name}' sends only after it gets its inputs)",
                cycle=cycle, ingredient=name)
        raise self._not_found(node, name, tried)

    def _unblocked_below(self, node: Node) -> Node | None:
        """A running reactor lower on the stack whose awaited ingredient has become available."""
        for other in reversed(self.stack):
            run = other.run
            if other is not node and other.status is Status.RUNNING and run is not None \
                    and run.awaiting is not None and run.awaiting in self.available:
                return other
        return None

    def _recorded_producer(self, ingredient: str) -> Node | None:
        if self.producers is None:  # read once per session: {ingredient: producer}
            self.producers = self.meta.producers()
        name = self.producers.get(ingredient)
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
        if isinstance(value, ReceiveRequest):
            raise ReactorProtocolError(
                f"reactor '{run.name}' sent ingredient '{name}' with the request "
                f"pipe.receive('{value.name}') as its value: a yield is missing; write "
                f"`x = yield pipe.receive('{value.name}')`", reactor=run.name, ingredient=name)
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
        """Another reactor sent ``name`` this session, or the plant records another producer
        whose source still sends it: refuse, before the value is stored."""
        entry = self.available.get(name)
        other = entry[1] if entry is not None else self._recorded_producer(name)
        if other is None or other is run.node:
            return
        if entry is not None or name in self.static_io[other.name].sends:
            raise DuplicateProducerError(
                f"reactors '{other.name}' and '{run.name}' both send ingredient '{name}'; "
                f"an ingredient has exactly one producer", reactor=run.name, ingredient=name)

    # --- finishing ---

    def _finish(self, node: Node) -> None:
        run = node.run
        run.check_protocol()
        for name, (key, storage, value) in list(run.allocations.items()):
            self.send(run, name, value, key)  # allocated but not sent: send it now
        code = dict(self._code_map(node))
        code.update({f"sub:{n}": self.plant._code_hash(f) for n, f in run.subreactors.items()})
        files, dirs, env = run.external.finish(self.plant._file_hashes) if run.external else ({}, {}, {})
        trace_id = hashing.combine("trace", [("reactor", node.name)]
                                   + [("code",) + kv for kv in code.items()]
                                   + [("config", p, t) for p, (t, _) in run.config_reads.items()]
                                   + [("input",) + kv for kv in run.inputs.items()]
                                   + [("file",) + kv for kv in files.items()]
                                   + [("dir",) + kv for kv in dirs.items()]
                                   + [("env", k, repr(v)) for k, v in env.items()])
        outputs = {name: stored.version for name, stored in run.outputs.items()}
        trace = Trace(node.name, trace_id, code, dict(run.config_reads), dict(run.inputs), outputs,
                      finished=time.time(), duration=run.elapsed, files=files, dirs=dirs, env=env)
        history = self.plant._record_history(node, ran=True, started=run.started, duration=run.elapsed)
        self.meta.commit_trace(trace, history)  # WarehouseError when the disk refuses
        if self.producers is not None:
            self.producers.update(dict.fromkeys(outputs, node.name))
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
    noun = {"fn": "function", "cls": "class", "const": "constant", "sub": "subreactor", "obj": "object",
            "name": "name"}.get(kind, kind)
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
