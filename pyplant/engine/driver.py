"""Driving one task's body: a run records what the body reads, calls and sends, and ``step``
advances its generator by one yield.

The driver never touches the session's maps: sends and allocations go to the run's ``host``
(the scheduler), which stores them and updates what is available; ``step`` returns what the body
asked for. That split is what an executor needs to run a body elsewhere.

    step(run, value) -> FINISHED | BARE | ReceiveRequest
"""
from __future__ import annotations

import time
from typing import Any, Callable, Generator, Protocol

from .. import collector, hashing, tracking
from ..errors import ReactorProtocolError
from ..pipework import Pipework, ReceiveRequest
from ..reactor import SubreactorCall
from ..running import active_run
from ..warehouse import Stored
from .tasks import Task

FINISHED = object()  # the body returned
BARE = object()      # a bare `yield`, answered with None


class RunHost(Protocol):
    """What a run asks of the engine (the scheduler implements it)."""
    def send(self, run: "ReactorRun", name: str, value: Any, key: str | None) -> None: ...
    def allocate(self, run: "ReactorRun", name: str, key: str | None, temp: bool, **kwargs: Any) -> Any: ...
    def param_token(self, run: "ReactorRun", name: str, value: Any) -> str: ...
    def emit(self, event: str, *args: Any) -> None: ...


class ReactorRun:
    """One execution of a task: its generator and what it received, read, called and sent.

    inputs      {ingredient: content hash} received (own products excluded)
    config_reads {param: (token, shown value)} of the non-auxiliary parameters read
    subreactors {subreactor key: function} called
    outputs     {ingredient: Stored} sent
    allocations {ingredient: (type key, storage name, value)} allocated, not yet sent
    temps       [(type key, storage name)] allocated with allocate_temp, freed at the end
    external    the files and variables it reads (``tracking.InputRecorder``), or None
    elapsed     seconds spent inside the body so far
    """

    def __init__(self, host: RunHost, task: Task, config: Any, external: tracking.InputRecorder | None):
        self.host = host
        self.task = task
        self.name = task.name
        self.reactor_name = task.name  # read by ConfigBase for error messages
        self.inputs: dict[str, str] = {}
        self.config_reads: dict[str, tuple[str, str]] = {}
        self.subreactors: dict[str, Callable] = {}
        self.unstarted_calls: set[SubreactorCall] = set()  # called without `yield from` so far
        self.unyielded: dict[int, ReceiveRequest] = {}     # pipe.receive(...) not yet yielded
        self.outputs: dict[str, Stored] = {}
        self.allocations: dict[str, tuple[str, str, Any]] = {}
        self.temps: list[tuple[str, str]] = []
        self.pipe = Pipework(self)
        self.plant_config = config
        self.config = config._bind(self) if config is not None else None
        self.external = external
        self.generator: Generator | None = None
        self.awaiting: ReceiveRequest | None = None
        self.started = time.time()
        self.elapsed = 0.0

    # called by ConfigBase on each read of a non-auxiliary parameter
    def __call__(self, param: str, value: Any) -> None:
        if param not in self.config_reads:
            self.config_reads[param] = (self.host.param_token(self, param, value), hashing.short_repr(value))

    def read_config(self, param: str, register: bool) -> Any:
        config = self.plant_config
        value = config.peek(param) if config.has(param) else self.config.__getattr__(param)
        if register and not config.is_auxiliary(param):
            self(param, value)
        return value

    def on_subreactor_call(self, call: SubreactorCall) -> None:
        self.unstarted_calls.add(call)

    def on_subreactor(self, name: str, key: str, func: Callable, call: SubreactorCall) -> None:
        self.unstarted_calls.discard(call)
        self.subreactors[key] = func
        self.host.emit("subreactor_started", name)

    def track_file(self, path: Any) -> None:
        if self.external is not None:
            self.external.track_file(path)

    def on_receive(self, request: ReceiveRequest) -> None:
        self.unyielded[id(request)] = request

    def send(self, name: str, value: Any, key: str | None) -> None:
        if isinstance(value, ReceiveRequest):
            raise ReactorProtocolError(
                f"reactor '{self.name}' sent ingredient '{name}' with the request "
                f"pipe.receive('{value.name}') as its value: a yield is missing; write "
                f"`x = yield pipe.receive('{value.name}')`", reactor=self.name, ingredient=name)
        self.host.send(self, name, value, key)

    def allocate(self, name: str, key: str | None, temp: bool, **kwargs: Any) -> Any:
        return self.host.allocate(self, name, key, temp, **kwargs)

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

    def protocol_hint(self) -> str | None:
        """While the body raises: what a forgotten ``yield`` or ``yield from`` would explain
        (``sum(pipe.receive('x'))`` fails on the request, not on the ingredient)."""
        if self.unyielded:
            name = next(iter(self.unyielded.values())).name
            return (f"note: pipe.receive('{name}') was called but not yielded, so its value is a "
                    f"request, not the ingredient; write `x = yield pipe.receive('{name}')`")
        if self.unstarted_calls:
            sub = next(iter(self.unstarted_calls)).name
            return (f"note: subreactor '{sub}' was called without 'yield from', so its value is a "
                    f"generator, not its result; write `result = yield from {sub}(...)`")
        return None

    def close(self, logger: Any) -> None:
        """Close an unfinished generator (after an error elsewhere); its own error is logged."""
        if self.generator is not None:
            try:
                self.generator.close()
            except BaseException as exc:  # the original error matters more
                logger.warning("reactor '%s' raised while closing: %r", self.name, exc)


def start(run: ReactorRun) -> None:
    """Make the body's generator (no user code runs until the first ``step``)."""
    run.generator = run.task.start(run)


def step(run: ReactorRun, value: Any, logger: Any) -> Any:
    """Advance the body by one yield, sending it ``value`` (None the first time).

    Returns the ``ReceiveRequest`` of what it receives next, ``BARE`` or ``FINISHED``. The body runs
    with the run active (``running.active_run``), its file and environment reads recorded,
    and the cyclic collector as the user left it.

    Raises
    ------
    ReactorProtocolError
        when the body yields something other than ``pipe.receive(name)``.
    BaseException
        whatever the body raised, with a note naming the reactor.
    """
    token = active_run.set(run)
    began = time.perf_counter()
    try:
        with tracking.stepping(run.external), collector.resumed():
            try:
                request = run.generator.send(value)
            except StopIteration:  # caught inside: a Ctrl-C landing as the block exits then
                request = FINISHED  # does not show a StopIteration as its context
    except BaseException as exc:
        exc.add_note(f"(raised in {run.task.kind} '{run.name}')")
        hint = run.protocol_hint()
        if hint is not None:
            exc.add_note(hint)
        logger.error("%s '%s' raised %s: %s", run.task.kind, run.name, type(exc).__name__, exc)
        raise
    finally:
        run.elapsed += time.perf_counter() - began
        active_run.reset(token)
    if request is FINISHED:
        return FINISHED
    if request is None:
        return BARE
    if not isinstance(request, ReceiveRequest):
        raise ReactorProtocolError(
            f"reactor '{run.name}' yielded {request!r}; reactors may only yield "
            f"pipe.receive(name) (or use 'yield from' for subreactors)", reactor=run.name)
    run.unyielded.pop(id(request), None)
    return request
