"""The suspending scheduler: verifies traces, runs stale tasks, parks and resumes them.

After "Build systems a la carte" (Mokhov, Mitchell and Peyton Jones, 2018): a suspending
scheduler with verifying, constructive traces. One ``Scheduler`` lives for one ``run_reactor``
call, so a config edited in place between two calls is seen; its state is a ``SessionState``
(``state.py``), the plant's memory a ``PlantSession`` (``session.py``).

The loop advances the node on top of an explicit stack (no recursion: a chain of 10,000 tasks
needs no Python stack):

* a CHECKING node tries its candidate traces (``_candidate_traces``: the trace index gives
  those whose code and parameters equal the current ones, most recently used first). A
  candidate verifies when its external inputs are unchanged and each input, once its producer
  is settled (pushed on the stack), still has the recorded content hash (``verify.py``). A
  producer that re-ran and made identical bytes therefore stops the wave (early cutoff), and
  an older trace can match again (config A -> B -> A finds A's versions). When none verifies,
  the node runs, with the reason its closest trace gives.
* a RUNNING node's body is stepped (``driver.py``) until it receives an ingredient that is not
  available; its producer is pushed (``producers.py``). The target of ``run_reactor`` always
  runs.

Before any body runs, every task's code map is built (module state is still what importing
left) and the static checks run (``producers.read_sources``, ``check_producers``).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from .. import collector, hashing, tracking
from ..config import param_token
from ..errors import AllocationError, CorruptVersionError, PyPlantError, WarehouseError
from ..reactor import subreactor_function
from ..warehouse import Trace
from ..warehouse.metadata import code_digest, trace_index_key
from . import driver, producers, verify
from .session import EngineContext, PlantSession, resident_bytes
from .state import Need, Node, SessionState, Status, version_key
from .tasks import Task

# 'Why it re-ran' compares with this many recent traces.
EXPLAIN_TRACES = 16


class Scheduler:
    """Runs tasks for one session of a plant; see the module docstring."""

    def __init__(self, ctx: EngineContext, session: PlantSession, tasks: list[Task]):
        self.ctx = ctx
        self.session = session
        self.meta = ctx.warehouse.metadata
        self.state = SessionState.of(tasks)

    # --- the driving loop ---

    def run(self, name: str) -> None:
        """Run task ``name`` (always) and whatever stale tasks produce what it receives.

        Raises whatever a body raised (original type) and the ``pyplant.errors`` of the
        static checks, a missing ingredient, a cycle, two producers.
        """
        self.bring_up_to_date([name], run_first=True)

    def bring_up_to_date(self, names: list[str], run_first: bool = False) -> None:
        """Settle tasks ``names`` in order: each is verified (or, the first one with
        ``run_first``, run) and whatever stale tasks produce what they receive run."""
        with collector.paused():  # bodies run with the collector resumed (driver.step)
            try:
                self._prepare([self.state.nodes[n] for n in names])
                for i, name in enumerate(names):
                    self._settle(self.state.nodes[name], run=run_first and i == 0)
            finally:
                self._forget_untouched()
                self.session.last_run = {n: version for n, (version, _) in self.state.available.items()}

    def _settle(self, target: Node, run: bool) -> None:
        state = self.state
        if target.status in (Status.RAN, Status.CACHED):
            return
        if run:
            self._start_running(target, reason="target of run_reactor")
            state.stack.append(target)
        else:
            self._push(target)
        try:
            stack = state.stack
            while stack:
                node = stack[-1]
                status = node.status
                need = self._advance_check(node) if status is Status.CHECKING else \
                    self._advance_run(node) if status is Status.RUNNING else None
                if need is None:
                    state.stack.pop()
                elif need.restart or need.resume:
                    state.stack.remove(need.producer)
                    if need.restart:
                        self._start_running(need.producer, reason="needed while verifying (trace cycle)")
                    state.stack.append(need.producer)
                else:
                    self._push(need.producer)
        except BaseException:
            self._abort()
            raise

    def _prepare(self, targets: list[Node]) -> None:
        """Code maps of every task, then the static checks: before any body runs."""
        state = self.state
        functions = {n.name: n.task.func for n in state.order if n.task.code is None}
        state.code_maps = self.ctx.mapper.code_maps(functions)
        state.code_maps.update({n.name: n.task.code() for n in state.order if n.task.code is not None})
        derived = {n.name for n in state.order if self.ctx.source_derived and not n.task.pinned
                   and n.task.outputs is None}
        producers.read_sources(state, state.code_maps, derived, self.ctx.scope, self.meta)
        for target in targets:
            producers.check_producers(state, target, self.meta)

    def _forget_untouched(self) -> None:
        """Keep in memory what this run used, and a bounded set of the rest: a notebook that
        tries 100 configs must not hold 100 versions of every ingredient."""
        self.session.values.keep(self.state.touched)

    def _abort(self) -> None:
        """After an exception: close every unfinished body, free what it allocated and every
        file it wrote for a version that will never commit."""
        for node in reversed(self.state.stack):
            run = node.run
            if node.status is Status.RUNNING and run is not None:
                run.close(self.ctx.logger)
                self._free(run, [(k, s) for k, s, _ in run.allocations.values()] + run.temps)
                for stored in run.outputs.values():
                    self.ctx.warehouse.free(stored.version)
                self._drop_outputs(node)
            node.status, node.run = Status.NEW, None
        self.state.stack.clear()

    # --- verifying ---

    def _push(self, node: Node) -> None:
        node.status = Status.CHECKING
        node.trace_ids, node.latest_trace, node.checking = self._candidate_traces(node)
        node.trace_index = node.input_index = 0
        self.state.stack.append(node)

    def _candidate_traces(self, node: Node) -> tuple[list[str], str | None, Trace | None]:
        """Ids of the traces whose code and parameters equal the current ones, most recently
        used first, through the trace index (one lookup per set of parameters the task has
        read): a return to any stored config costs no scan of older traces. With them, the id
        of the task's latest trace and the first candidate, read in the same transaction."""
        params = self._params(node)

        def key_of(names: tuple[str, ...]) -> str | None:
            if not all(params.has(p) and not params.is_auxiliary(p) for p in names):
                return None  # an auxiliary or removed parameter: not found by key
            tokens = {p: self._token(node, p, params.peek(p)) for p in names}
            return trace_index_key(self._code_digest(node), tokens)

        return self.meta.candidate_traces_first(node.task.key, key_of)

    def _advance_check(self, node: Node) -> Need | None:
        if node.name in self.session.forced:
            return self._run_forced(node, "forced")
        while node.trace_index < len(node.trace_ids):
            trace = node.checking
            if trace is None or trace.trace_id != node.trace_ids[node.trace_index]:
                trace = node.checking = self.meta.trace(node.task.key, node.trace_ids[node.trace_index])
                if trace is None:  # unreadable: skip it
                    self._next_trace(node, None)
                    continue
            if node.input_index == 0 and not verify.static_holds(node.name, trace, self._code_map(node),
                                                                 lambda: self._facts(node),
                                                                 node.task.inputs is not None):
                self._next_trace(node, None)  # explained by _why_stale if nothing matches
                continue
            inputs = list(trace.inputs.items())
            task, available = node.task, self.state.available
            while node.input_index < len(inputs):
                slot, content_hash = inputs[node.input_index]
                ingredient = slot if task.inputs is None else task.input_ingredient(slot)
                entry = available.get(ingredient)
                if entry is None:  # its producer settles first, or nothing produces it now
                    producer = producers.first_new_candidate(self.state, ingredient, self.meta)
                    if producer is not None:
                        return Need(producer)
                    state = None
                else:
                    upstream = entry[1]
                    if upstream is not None and upstream.forced:
                        return self._run_forced(
                            node, f"forced: upstream {upstream.task.kind} '{upstream.name}' was forced")
                    state = entry[0].content_hash
                if state != content_hash:
                    break
                node.input_index += 1
            else:
                self._settle_cached(node, trace)
                return None
            self._next_trace(node, verify.input_change(ingredient, state) if _sent_as(node, trace) else None)
        self._start_running(node, node.reason or self._why_stale(node, self._facts(node)))
        return self._advance_run(node)

    def _run_forced(self, node: Node, reason: str) -> Need | None:
        node.forced = True
        self._start_running(node, reason)
        return self._advance_run(node)

    def _next_trace(self, node: Node, reason: str | None) -> None:
        """Try the next candidate; ``reason`` is why this one failed on its inputs (its code
        and parameters matched, so it explains the re-run best)."""
        if reason is not None and node.reason is None:
            node.reason = reason
        node.trace_index += 1
        node.input_index = 0

    def _facts(self, node: Node) -> verify.Facts:
        """What is true now for ``node``, computed lazily and cached for the session; built
        once per node (its functions read the session's state when called)."""
        facts = node.facts
        if facts is None:
            facts = node.facts = self._new_facts(node)
        return facts

    def _new_facts(self, node: Node) -> verify.Facts:
        params = self._params(node)

        def param(name: str) -> tuple[str, str] | None:
            if not params.has(name):
                return None
            value = params.peek(name)
            return self._token(node, name, value), verify.shown(value)

        def input_hash(slot: str) -> object:
            entry = self.state.available.get(node.task.input_ingredient(slot))
            return entry[0].content_hash if entry is not None else None

        return verify.Facts(code=self._code_map(node), sub_hash=self._subreactor_hash, param=param,
                            auxiliary=params.is_auxiliary, env=os.environ,
                            file_digest=self.ctx.file_hashes.digest, listing=tracking.listing_hash,
                            input_hash=input_hash, kind=node.task.kind,
                            slots=None if node.task.inputs is None else tuple(node.task.inputs))

    def _why_stale(self, node: Node, facts: verify.Facts) -> str:
        """Every difference against the closest of the task's recent traces that explain it
        (``_sent_as``)."""
        traces = [t for t in self.meta.traces(node.task.key, limit=EXPLAIN_TRACES) if _sent_as(node, t)]
        found = verify.closest_trace(node.name, traces, facts)
        if found is None:
            return self.meta.invalidated(node.task.key) or "no trace yet"
        node.why = found
        return verify.summarize(found[1])

    def _code_map(self, node: Node) -> dict[str, str]:
        """{label: hash} of the task's code and all user code it reaches (dependencies.py)."""
        return self.state.code_maps[node.name]

    def _code_digest(self, node: Node) -> str:
        digests = self.state.code_digests
        digest = digests.get(node.name)
        if digest is None:
            digest = digests[node.name] = code_digest(self._code_map(node))
        return digest

    def _subreactor_hash(self, label: str) -> str | None:
        hashes = self.state.sub_hashes
        if label not in hashes:
            func = subreactor_function(label[4:])
            hashes[label] = None if func is None else self.ctx.own_hash(func)
        return hashes[label]

    def _params(self, node: Node) -> Any:
        return node.task.params if node.task.params is not None else self.ctx.config

    def _token(self, node: Node, name: str, value: Any) -> str:
        """The token of a parameter value, once per session (per parameter source)."""
        key = (id(node.task.params), name)
        token = self.state.tokens.get(key)
        if token is None:
            token = self.state.tokens[key] = param_token(name, value, self._deep_code_hash, node.name)
        return token

    def _deep_code_hash(self, func: Any) -> str:
        """A callable in the config counts with all it reaches: closure cells, helpers, globals."""
        return hashing.combine("codemap", self.ctx.mapper.code_map(func).items())

    def _settle_cached(self, node: Node, trace: Trace) -> None:
        node.status, node.trace = Status.CACHED, trace
        if trace.trace_id != node.latest_trace:  # an older trace matched again: make it the latest
            self.meta.promote_trace(node.task.key, trace)
        available, task = self.state.available, node.task
        for slot, version in trace.outputs.items():
            available[slot if task.outputs is None else task.output_ingredient(slot)] = (version, node)
        self.session.record(node.name, ran=False, started=time.time(), duration=0.0, reason=None)
        logger = self.ctx.logger
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s '%s' is up to date (trace %s)", node.task.kind, node.name, trace.trace_id[:8])

    # --- running ---

    def _start_running(self, node: Node, reason: str) -> None:
        node.status, node.reason = Status.RUNNING, reason
        config = self.ctx.config if node.task.params is None else None
        node.run = driver.ReactorRun(self, node.task, config, self.ctx.recorder())
        node.run.node = node
        self.ctx.logger.info("running %s '%s': %s", node.task.kind, node.name, reason)

    def _advance_run(self, node: Node) -> Need | None:
        run = node.run
        value = None
        if run.generator is None:
            driver.start(run)
            self.emit("reactor_started", node.name, node.task.func)
        elif run.awaiting is not None:
            value = self._receive(node, run.awaiting)
            if isinstance(value, Need):
                return value
        while True:
            asked = driver.step(run, value, self.ctx.logger)
            if asked is driver.FINISHED:
                self._finish(node)
                return None
            self.emit("reactor_step", node.name)
            value = None if asked is driver.BARE else self._receive(node, asked)
            if isinstance(value, Need):
                return value

    def _receive(self, node: Node, request: Any) -> Any:
        """The value ``request`` asks for, or the ``Need`` to wait on (then ``awaiting``)."""
        run, name = node.run, request.name
        run.awaiting = None
        if name in run.outputs:  # its own product, sent earlier in this run
            return run.outputs[name].value
        entry = self.state.available.get(name)
        if entry is None:
            run.awaiting = request
            return producers.find(self.state, node, name, self.meta, self.ctx.logger)
        value = self._value(name)
        if isinstance(value, Need):
            run.awaiting = request
            return value
        if request.record:
            run.inputs[name] = entry[0].content_hash
        return value

    def _value(self, name: str) -> Any:
        version, producer = self.state.available[name]
        key = version_key(version)
        self.state.touched.add(key)
        values = self.session.values
        if key in values:
            return values[key]
        try:
            value = self.ctx.warehouse.load(version)
        except CorruptVersionError as exc:
            self.ctx.logger.warning("%s; re-running %s '%s' to recompute it", exc, producer.task.kind,
                                    producer.name)
            self.ctx.warehouse.discard(version)
            self._invalidate(producer)
            return Need(producer)
        return values.put(key, value, resident_bytes(version))

    def _invalidate(self, node: Node) -> None:
        """A cached node's versions are damaged: forget its trace and verify it again."""
        if node.trace is not None:
            self.meta.forget_trace(node.task.key, node.trace.trace_id)
        self._drop_outputs(node)
        node.status, node.trace, node.reason = Status.NEW, None, "a stored version was missing or corrupted"

    def _drop_outputs(self, node: Node) -> None:
        available = self.state.available
        for name in [n for n, (_, p) in available.items() if p is node]:
            version, _ = available.pop(name)
            self.session.values.pop(version_key(version))

    # --- what a run asks (driver.RunHost) ---

    def emit(self, event: str, *args: Any) -> None:
        self.ctx.emit(event, *args)

    def param_token(self, run: driver.ReactorRun, name: str, value: Any) -> str:
        return self._token(run.node, name, value)

    def send(self, run: driver.ReactorRun, name: str, value: Any, key: str | None) -> None:
        producers.check_single_producer(self.state, run.node, name, self.meta)
        warehouse = self.ctx.warehouse
        allocated = run.allocations.pop(name, None)
        if key is None:  # the allocated value itself (its path) keeps its allocated type
            key = allocated[0] if allocated and _is_allocated(value, allocated[2]) \
                else warehouse.infer_type(value, name=name, reactor=run.name)
        warehouse.check_type(key)
        try:
            stored = warehouse.store(name, value, key, allocated[1] if allocated else None, reactor=run.name)
        except PyPlantError:
            raise
        except Exception as exc:
            exc.add_note(f"(while {run.task.kind} '{run.name}' sent ingredient '{name}')")
            raise
        run.outputs[name] = stored
        self.state.available[name] = (stored.version, run.node)
        self.session.values.put(version_key(stored.version), stored.value, resident_bytes(stored.version))
        self.state.touched.add(version_key(stored.version))

    def allocate(self, run: driver.ReactorRun, name: str, key: str | None, temp: bool, **kwargs: Any) -> Any:
        if key is None:
            raise AllocationError(f"reactor '{run.name}' must give a type to allocate '{name}'",
                                  reactor=run.name, ingredient=name)
        if not temp:
            producers.check_single_producer(self.state, run.node, name, self.meta)
        try:
            value, storage = self.ctx.warehouse.allocate(name, key, temp=temp, reactor=run.name, **kwargs)
        except AllocationError as exc:
            raise AllocationError(f"reactor '{run.name}' cannot allocate ingredient '{name}': {exc}",
                                  reactor=run.name, ingredient=name) from exc
        except WarehouseError as exc:
            raise WarehouseError(f"reactor '{run.name}' cannot allocate ingredient '{name}': {exc}",
                                 reactor=run.name, ingredient=name) from exc
        except Exception as exc:
            exc.add_note(f"(while {run.task.kind} '{run.name}' allocated ingredient '{name}')")
            raise
        if temp:
            run.temps.append((key, storage))
        else:
            run.allocations[name] = (key, storage, value)
        return value

    # --- finishing ---

    def _finish(self, node: Node) -> None:
        run = node.run
        run.check_protocol()
        for name, (key, storage, value) in list(run.allocations.items()):
            self.send(run, name, value, key)  # allocated but not sent: send it now
        trace = self._trace_of(node, run)
        if node.why is not None:  # the inputs it received, which had not settled when it started
            closest, found = node.why
            later = verify.received_differences(closest, trace.inputs, found)
            if later:
                node.reason = verify.summarize(found + later)
        history = self.session.record(node.name, ran=True, started=run.started, duration=run.elapsed,
                                      reason=node.reason)
        self.meta.commit_trace(trace, self.session.stored(history))  # WarehouseError when the disk refuses
        if self.state.producers is not None:
            self.state.producers.update(dict.fromkeys(trace.published().values(), node.task.key))
        self._free(run, run.temps)
        node.status, node.trace, node.run = Status.RAN, trace, None
        self.session.forced.discard(node.name)
        self.ctx.logger.info("%s '%s' finished in %.3f s", node.task.kind, node.name, run.elapsed)
        self.emit("reactor_finished", node.name)

    def _trace_of(self, node: Node, run: driver.ReactorRun) -> Trace:
        """The trace a finished run leaves (see ``warehouse.Trace``)."""
        code = dict(self._code_map(node))
        code.update({f"sub:{n}": self.ctx.own_hash(f) for n, f in run.subreactors.items()})
        files, dirs, env = run.external.finish(self.ctx.file_hashes) if run.external else ({}, {}, {})
        task = node.task
        if task.inputs is None:
            inputs = {task.input_slot(name): digest for name, digest in run.inputs.items()}
        else:  # every slot, also two slots that receive one ingredient
            inputs = {slot: run.inputs[name] for slot, name in task.inputs.items() if name in run.inputs}
        trace_id = hashing.combine("trace", [("reactor", task.key)]
                                   + [("code",) + kv for kv in code.items()]
                                   + [("config", p, t) for p, (t, _) in run.config_reads.items()]
                                   + [("input",) + kv for kv in inputs.items()]
                                   + [("file",) + kv for kv in files.items()]
                                   + [("dir",) + kv for kv in dirs.items()]
                                   + [("env", k, repr(v)) for k, v in env.items()])
        outputs = {task.output_slot(name): stored.version for name, stored in run.outputs.items()}
        names = {slot: name for slot, name in ((task.output_slot(n), n) for n in run.outputs) if slot != name}
        return Trace(task.key, trace_id, code, dict(run.config_reads), inputs, outputs,
                     finished=time.time(), duration=run.elapsed, files=files, dirs=dirs, env=env, names=names)

    def _free(self, run: driver.ReactorRun, allocations: list[tuple[str, str]]) -> None:
        for key, storage in allocations:
            self.ctx.warehouse.deallocate(key, storage)


def _sent_as(node: Node, trace: Trace) -> bool:
    """True when ``trace`` explains ``node``: always for a reactor; for a step call, when it sent
    what the call sends (the calls of one step share traces, and a first call of ``scale_1`` is
    new, not 'changed' from a trace of ``scale``)."""
    outputs = node.task.outputs
    return outputs is None or set(trace.published().values()) == set(outputs.values())


def _is_allocated(value: Any, allocated: Any) -> bool:
    """True when ``value`` is what ``allocate`` returned (the object, or the same path)."""
    if value is allocated:
        return True
    return isinstance(value, (str, os.PathLike)) and isinstance(allocated, str) \
        and os.fspath(value) == allocated
