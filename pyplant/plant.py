"""Plant: the facade users hold (config, reactors, run_reactor, steps, events, history, shutdown)."""
from __future__ import annotations

import datetime
import enum
import functools
import logging
import os
import tempfile
import threading
from typing import Any, Callable, Iterable, TypeVar

from . import hashing, reactor as _reactor, static, tracking
from .config import ConfigBase
from .dependencies import CodeMapper, CodeScope
from .errors import (IngredientNotFoundError, PlantClosedError, PlantDirError, ReactorDefinitionError,
                     NotExplainedError, ReentrantRunError, StepUsageError, UnknownReactorError)
from .pipework import check_name
from .engine import EngineContext, ExecutionRecord, PlantSession, Scheduler, Task, fetch, reactor_task
from .running import active_plant
from .steps import StepResult, graph as step_graph, runner, tasks as step_tasks
from .warehouse import Warehouse, gc
from .warehouse.gc import GCResult


_F = TypeVar("_F", bound=Callable[..., Any])


def _open_only(method: _F) -> _F:
    """Raise ``PlantClosedError`` when the plant was shut down, instead of a raw LMDB error."""
    @functools.wraps(method)
    def guarded(self: "Plant", *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise PlantClosedError(f"the plant on {self.plantDir!r} was shut down; "
                                   f"{method.__name__}() needs an open plant: create a new Plant")
        return method(self, *args, **kwargs)
    return guarded  # type: ignore[return-value]


class Plant:
    """Runs reactors and keeps their ingredients in a warehouse under ``plantDir``.

    Parameters
    ----------
    plantDir : str or os.PathLike
        Where ingredients and metadata live; created when missing. Trust it like code: the
        warehouse unpickles what it finds there.
    logger : logging.Logger, optional
        Where decisions are logged; defaults to the ``pyplant`` logger (no handler is added).
    logLevel : int, optional
        Level set on that logger.
    functionHash : callable, optional
        ``f(func) -> str`` used instead of the built-in code hash, for reactors and subreactors.
    durable : bool
        fsync blobs and metadata commits so that they survive power loss. Off by default: every
        commit survives a killed process either way.
    userPackages, libraryPackages : iterable of str
        Top-level packages whose code is hashed by source (user code) or keyed by their version
        (library), overriding the default: outside the standard library and site-packages is
        user code. See ``dependencies.py``.
    track_files : bool
        Record the files and directory listings each reactor reads (outside the plant, the
        standard library and site-packages) with their content hash, and re-run the reactor
        when one changes. See ``tracking.py``; ``pipe.track_file(path)`` adds a file by hand.
    track_env : bool
        Record the environment variables each reactor reads through ``os.environ`` and re-run
        it when one changes.

    Raises
    ------
    PlantDirError
        when ``plantDir`` is a file, cannot be created, or is not writable.

    After ``shutdown()`` (or the end of a ``with`` block) every method but ``shutdown`` raises
    ``PlantClosedError``.
    """

    class EventType(enum.Enum):
        unknown = 0
        reactor_started = 1
        subreactor_started = 2
        reactor_finished = 3
        subreactor_finished = 4  # never fired, kept for PyPlant compatibility
        reactor_step = 5

    def __init__(self, plantDir: str | os.PathLike, logger: logging.Logger | None = None,
                 logLevel: int | None = None, functionHash: Callable[[Callable], str] | None = None,
                 *, durable: bool = False, userPackages: Iterable[str] = (),
                 libraryPackages: Iterable[str] = (), track_files: bool = True,
                 track_env: bool = True):
        self.plantDir = os.fspath(plantDir)
        self.logger = logger or logging.getLogger("pyplant")
        if logLevel is not None:
            self.logger.setLevel(logLevel)
        self.functionHash = functionHash
        self._closed = True  # until the warehouse is open
        self._running: set[int] = set()  # threads inside run_reactor of this plant
        self.codeScope = CodeScope.of(userPackages, libraryPackages)
        self.reactors: dict[str, Callable] = {}
        self._step_tasks: dict[str, Task] = {}  # step calls of run(): producers for reactors too
        self._reactor_tasks: dict[str, Task] = {}  # by reactor name, for its current function
        self._entered: list = []  # (active_plant, step graph) tokens of `with` blocks
        self._calls = 0  # Plant.run calls in progress (a pipeline's .result() nests one)
        self._automatic = False   # reactors come from the registry (no add_reactors call)
        self._run_lock = threading.Lock()  # one run_reactor at a time per plant
        self.config = ConfigBase()
        self.warehouse = _open_warehouse(self.plantDir, durable, self.logger)
        self._listeners: dict[Plant.EventType, list[Callable]] = {}
        self._session = PlantSession()  # values, last run, forced, decisions, history
        self.track_files, self.track_env = track_files, track_env
        self._real_dir: str | None = None  # the plant directory's real path, for input recorders
        self._file_hashes = tracking.FileHashes(self.warehouse.metadata)
        if track_files or track_env:
            tracking.install()
        self._closed = False

    @staticmethod
    def _clear_global_state() -> None:
        """Forget every @ReactorFunc and @SubreactorFunc defined so far (test isolation)."""
        _reactor.clear_registries()

    def __enter__(self) -> "Plant":
        """``with Plant(dir) as plant:``: step results computed with ``.result()`` and
        pipelines called directly run on this plant, and step calls made in the block are
        named in their order in it (``scale``, ``scale_1``); the plant shuts down at the end."""
        if self._closed:
            raise PlantClosedError(f"the plant on {self.plantDir!r} was shut down; a `with` "
                                   f"block needs an open plant: create a new Plant")
        self._entered.append((active_plant.set(self), step_graph.new_graph()[1]))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._entered:
            plant_token, graph_token = self._entered.pop()
            step_graph.end_graph(graph_token)
            active_plant.reset(plant_token)
        self.shutdown()

    def shutdown(self) -> None:
        """Close the warehouse and drop this plant's lease. Everything finished is already on
        disk; idempotent (and completes when called again after an interrupt inside it)."""
        self._closed = True
        warehouse = getattr(self, "warehouse", None)
        if warehouse is not None:
            warehouse.close()

    # --- configuration ---

    @_open_only
    def set_config(self, config: dict[str, Any] | ConfigBase) -> None:
        """Set the config: a dict or a ``ConfigBase``; later changes re-run what read them."""
        self.config = config if isinstance(config, ConfigBase) else ConfigBase(dict(config))

    @_open_only
    def get_config_object(self) -> ConfigBase:
        return self.config

    @_open_only
    def mark_params_as_auxiliary(self, params: Iterable[str]) -> None:
        """Parameters that never re-run anything when they change (log levels, temp dirs)."""
        self.config.mark_auxiliary(params)

    # --- reactors ---

    @_open_only
    def add_reactors(self, *funcs: Callable | Iterable[Callable]) -> None:
        """Add ``@ReactorFunc`` functions (or lists of them); a name added again is replaced.

        Raises ``ReactorDefinitionError`` for a function that is not a ``@ReactorFunc``.
        """
        for func in _flatten(funcs):
            if not _reactor.is_reactor(func):
                raise ReactorDefinitionError(f"{func!r} is not a @ReactorFunc")
            self.reactors[func.__name__] = func
        self._automatic = False

    add_reactor = add_reactors

    @_open_only
    def add_all_visible_reactors(self) -> None:
        """Add every ``@ReactorFunc`` defined so far whose name still refers to it."""
        self.add_reactors(*_reactor.registered_reactors())

    def _refresh_reactors(self) -> None:
        """Use the newest definition of every reactor (a notebook cell run again redefines it).

        A plant whose reactors all came from the registry follows it: reactors defined since
        are added, and a reactor whose name no longer refers to it (deleted, renamed) is dropped.
        """
        if self._automatic or not self.reactors:
            self.reactors = {f.__name__: f for f in _reactor.registered_reactors()}
            self._automatic = True
            return
        for name, func in list(self.reactors.items()):
            newest = _reactor.newest_definition(func)
            if newest is not None and newest is not func:
                self.reactors[name] = newest

    @_open_only
    def get_reactors(self) -> list[Callable]:
        return list(self.reactors.values())

    @_open_only
    def run_reactor(self, reactorToRun: Callable | str) -> None:
        """Run a reactor now, and whatever stale reactors produce what it receives.

        With no reactors added, every ``@ReactorFunc`` defined so far is added first.

        Raises
        ------
        UnknownReactorError
            when no reactor of that name was added.
        Exception
            whatever a reactor raised, with its original type; every reactor that finished
            before it stays cached.
        PyPlantError
            for a missing ingredient, a cycle, two producers of one name, ...
        """
        self._check_not_running(f"run_reactor('{_reactor.reactor_name(reactorToRun)}')",
                                _reactor.reactor_name(reactorToRun))
        with self._run_lock:  # other threads wait: one run_reactor at a time per plant
            self._refresh_reactors()
            name = _reactor.reactor_name(reactorToRun)
            if callable(reactorToRun) and _reactor.is_reactor(reactorToRun) \
                    and self.reactors.get(name) is not reactorToRun:
                newest = _reactor.newest_definition(reactorToRun) or reactorToRun
                self.reactors[name] = newest  # keeps the plant automatic when it was
            if name not in self.reactors:
                raise UnknownReactorError(f"no reactor '{name}' was added to the plant (known: "
                                          f"{', '.join(sorted(self.reactors)) or 'none'})", reactor=name)
            self._schedule(lambda scheduler: scheduler.run(name))

    def _schedule(self, work: Callable[[Scheduler], None], steps: list[Task] = ()) -> None:
        """One scheduling session over every task of the plant: its reactors, the step calls
        of its ``run`` calls (those of ``steps`` replacing earlier ones of the same name).
        Call it holding ``_run_lock``."""
        thread = threading.get_ident()
        if not self._calls:
            self._session.begin_call()
        self._running.add(thread)
        try:
            self._step_tasks.update((t.name, t) for t in steps)
            step_tasks.check_names(list(self._step_tasks.values()), lambda: list(self.reactors))
            tasks = [self._reactor_task(func) for func in self.reactors.values()]
            tasks += self._step_tasks.values()
            work(Scheduler(self._engine_context(), self._session, tasks))
        except BaseException:
            self._after_run(failed=True)
            raise
        else:
            self._after_run(failed=False)
        finally:
            self._running.discard(thread)

    def _reactor_task(self, func: Callable) -> Task:
        """The task of a reactor, made once per function object (a warm run of 3,000 reactors
        makes no new ones)."""
        known = self._reactor_tasks.get(func.__name__)
        if known is None or known.func is not func:
            known = self._reactor_tasks[func.__name__] = reactor_task(func)
        return known

    def _check_not_running(self, what: str, reactor: str | None) -> None:
        if threading.get_ident() in self._running:
            raise ReentrantRunError(
                f"{what} was called while this plant is running reactors in the same thread (a "
                f"reactor or step calling it on its own plant?); receive the ingredient with "
                f"'yield pipe.receive(...)' or pass the result to a step instead", reactor=reactor)

    # --- steps ---

    @_open_only
    def run(self, targets: Any, *args: Any, **kwargs: Any) -> Any:
        """Compute step results, or run a ``@pipeline`` controller, re-running only what is
        stale (the rules of reactors: code, arguments, input contents, early cutoff).

        Parameters
        ----------
        targets : StepResult, structure of StepResults, or @pipeline function
            Results (alone, or anywhere in lists, tuples and dicts) are replaced by their
            values in a structure of the same shape. A pipeline controller is called with
            ``*args, **kwargs`` (ClearML's ``PipelineDecorator.pipeline``): inside it,
            ``result.result()`` computes a branch now; what it returns is computed, and so is
            every step it called whose result nothing used.

        Returns
        -------
        The values, in the structure of ``targets`` (or of what the controller returned).

        Raises
        ------
        StepUsageError
            for arguments given with results, a step named like a reactor of this plant, a
            step output that does not split by ``returns=``.
        StepCommandError
            when a program run as a step exits with an error.
        Exception
            whatever a step raised, with its original type; every step that finished before it
            stays cached.
        """
        token = active_plant.set(self)
        if not self._calls:
            self._session.begin_call()
        self._calls += 1  # a pipeline's .result() runs sessions inside this call
        try:
            if runner.is_pipeline(targets):
                return runner.run_pipeline(targets, args, kwargs, self._compute)
            if args or kwargs:
                raise StepUsageError("plant.run(results) takes no further arguments; arguments go "
                                     "to a @pipeline controller: plant.run(controller, *args)")
            return self._compute(targets, [])
        finally:
            self._calls -= 1
            active_plant.reset(token)

    def _compute(self, targets: Any, extra: list) -> Any:
        def run_tasks(tasks: list[Task], names: list[str]) -> None:
            self._check_not_running("plant.run", None)
            with self._run_lock:
                self._refresh_reactors()
                self._schedule(lambda scheduler: scheduler.bring_up_to_date(names), tasks)
        return runner.compute(targets, extra, run_tasks, self.fetch_ingredient)

    def _after_run(self, failed: bool) -> None:
        """Release what an interrupt may have left held (no I/O, cannot fail on a full disk),
        then, after a successful run, shrink the lease to what the plant still holds. After a
        failed run the lease keeps everything (a superset is safe), so that no error of ours
        can replace the reactor's."""
        self.warehouse.metadata.recover()
        self.warehouse.lease.recover()
        if failed:
            return
        try:
            self.warehouse.lease.compact(self._held())
        except OSError as exc:  # the journal stays a superset: safe
            self.logger.warning("could not compact the lease of %s: %s", self.plantDir, exc)

    @_open_only
    def force(self, *reactors: Callable | str) -> None:
        """Run these reactors (or steps: a name such as ``scale_1``, or a step result) on the
        next run, and every task that depends on them, even when their traces verify (and
        even when their outputs come out equal).

        Raises
        ------
        UnknownReactorError
            for a name that is neither a reactor of this plant nor one recorded in its
            directory (with the closest known name).
        """
        self._refresh_reactors()
        meta = self.warehouse.metadata
        known = set(self.reactors) | set(self._step_tasks) | set(meta.reactor_records())
        known |= {name for name, producer in meta.producers().items() if producer.startswith(step_tasks.KEY_PREFIX)}
        for r in reactors:
            name = r.call.name if isinstance(r, StepResult) else _reactor.reactor_name(r)
            if name not in known:
                raise UnknownReactorError(f"cannot force unknown reactor '{name}'"
                                          f"{static.did_you_mean(name, known)}", reactor=name)
            self._session.forced.add(name)

    @_open_only
    def invalidate_ingredient(self, name: str) -> int:
        """Forget every trace that sent ``name``, so its producer runs again next time.

        Returns the number of traces forgotten. The producer's consumers re-run only if the
        recomputed value differs (early cutoff). ``explain()`` then says the ingredient was
        invalidated.

        Raises
        ------
        IngredientNotFoundError
            when no reactor ever produced ``name`` in this plant directory (with the closest
            known name).
        IngredientNameError
            for a name that cannot be an ingredient name.
        """
        check_name(name, None)
        meta = self.warehouse.metadata
        self._session.last_run.pop(name, None)
        producer = meta.producer(name)
        if producer is None:
            known = meta.ingredient_names()
            raise IngredientNotFoundError(f"cannot invalidate ingredient '{name}': no reactor ever "
                                          f"produced it here{static.did_you_mean(name, known)}",
                                          reactor=None, ingredient=name)
        dropped = 0
        for trace in meta.traces(producer, limit=1 << 30):
            if name in trace.published().values():
                meta.forget_trace(producer, trace.trace_id)
                dropped += 1
        meta.mark_invalidated(producer, f"ingredient '{name}' was invalidated")
        self.logger.info("invalidated ingredient '%s': forgot %d trace(s) of reactor '%s'",
                         name, dropped, producer)
        return dropped

    @_open_only
    def gc(self, keep_last: int | None = None, max_bytes: int | None = None) -> GCResult:
        """Delete old versions; returns what was freed (``.traces``, ``.files``, ``.bytes``).

        Keeps the versions the latest trace of each reactor references, and whatever a live
        plant (this one or another process's) holds, plus: with ``keep_last=K`` the K most
        recent traces per reactor; with ``max_bytes=B`` older versions, most recently used
        first, within B bytes. With neither, only unreferenced files are swept.
        """
        result = gc.collect(self.warehouse, keep_last, max_bytes, self._held())
        self.logger.info("gc: %s", result)
        return result

    def _held(self) -> list[str]:
        """Locations of the versions this plant holds: loaded values, and what its last run
        used (``fetch_ingredient`` may load it later)."""
        held = set(self._session.held())
        held.update(v.location for v in self._session.last_run.values() if v.location)
        return sorted(held)

    @_open_only
    def explain(self, reactor: Callable | str | None = None) -> dict[str, str] | str:
        """Why each reactor of the last ``run_reactor`` ran: {reactor: reason}.

        Reasons read "target of run_reactor", "no trace yet", "code changed: function
        helpers.scale", "config parameter 'lr' changed from 0.1 to 0.2", "input 'data'
        changed", "forced", or "up to date" for a reactor verified without running. With a
        reactor, returns its reason alone.

        Raises
        ------
        NotExplainedError
            (also a ``KeyError``) when the last run did not involve that reactor, with the
            closest name that it did involve.
        """
        decisions = self._session.decisions
        if reactor is None:
            return dict(decisions)
        name = _reactor.reactor_name(reactor)
        if name not in decisions:
            raise NotExplainedError(f"reactor '{name}' was not part of the last run"
                                    f"{static.did_you_mean(name, decisions)}", reactor=name)
        return decisions[name]

    @_open_only
    def fetch_ingredient(self, name: str) -> Any:
        """The value of ingredient ``name`` from this session or its latest stored version.

        Raises ``IngredientNotFoundError`` when it was never produced, ``IngredientNameError``
        for a name that cannot be an ingredient name.
        """
        check_name(name, None)
        return fetch(self.warehouse, self._session, name)

    def _input_recorder(self) -> tracking.InputRecorder | None:
        if not (self.track_files or self.track_env):
            return None
        if self._real_dir is None:
            self._real_dir = os.path.realpath(self.plantDir)
        return tracking.InputRecorder(self._real_dir, self.track_files, self.track_env, resolved=True)

    def _engine_context(self) -> EngineContext:
        """What the engine uses of this plant, for one run (the config as set now)."""
        return EngineContext(
            warehouse=self.warehouse, config=self.config,
            mapper=CodeMapper(self._code_hash, self.codeScope, memo=self.warehouse.metadata),
            scope=self.codeScope, own_hash=self._code_hash, source_derived=self.functionHash is None,
            file_hashes=self._file_hashes, recorder=self._input_recorder, emit=self._trigger_event,
            logger=self.logger)

    def _code_hash(self, func: Callable) -> str:
        """The hash of one function's own code: ``functionHash``, a pinned version, or source."""
        if self.functionHash is not None:
            return self.functionHash(func)
        info = getattr(func, "pyplant", None)
        if info is not None and info.version is not None:
            return hashing.digest("version", str(info.version))
        return hashing.code_hash(func, self.warehouse.metadata)

    # --- events ---

    @_open_only
    def add_event_listener(self, eventType: "Plant.EventType", callback: Callable) -> None:
        """Call ``callback(eventType, reactorName[, func])`` synchronously on each event."""
        self._listeners.setdefault(eventType, []).append(callback)

    @_open_only
    def remove_event_listener(self, callback: Callable) -> None:
        for listeners in self._listeners.values():
            while callback in listeners:
                listeners.remove(callback)

    def _trigger_event(self, event: str, *args: Any) -> None:
        event_type = Plant.EventType[event]
        for callback in list(self._listeners.get(event_type, ())):
            callback(event_type, *args)

    # --- history ---

    @_open_only
    def get_execution_history(self) -> dict[str, ExecutionRecord]:
        """{reactor name: ExecutionRecord} of the reactors run or verified by this plant."""
        return dict(self._session.history)

    @_open_only
    def print_execution_history(self, printFn: Callable[[str], Any] = print) -> None:
        """Print one row per reactor: ran or cached, time in seconds, and why it ran."""
        records = sorted(self._session.history.values(), key=lambda r: r.startTime)
        width = max([len(r.reactorName) for r in records] + [7])
        printFn(f"{'reactor':<{width}}  {'status':<6}  {'seconds':>9}  reason")
        for r in records:
            printFn(f"{r.reactorName:<{width}}  {r.status:<6}  {r.totalRuntime:>9.3f}  "
                    f"{r.reason if r.wasRun else ''}")
        total = sum(r.totalRuntime for r in records)
        ran = sum(r.wasRun for r in records)
        printFn(f"{ran} ran, {len(records) - ran} cached, {total:.3f} s in reactors "
                f"({datetime.datetime.now():%H:%M:%S})")


def _flatten(funcs: Iterable[Any]) -> list[Callable]:
    result: list[Callable] = []
    for item in funcs:
        if isinstance(item, (list, tuple, set)):
            result.extend(item)
        else:
            result.append(item)
    return result


def _open_warehouse(plant_dir: str, durable: bool, logger: logging.Logger) -> Warehouse:
    if os.path.exists(plant_dir) and not os.path.isdir(plant_dir):
        raise PlantDirError(f"plant directory {plant_dir!r} is a file, not a directory")
    try:
        os.makedirs(plant_dir, exist_ok=True)
    except OSError as exc:
        raise PlantDirError(f"cannot create plant directory {plant_dir!r}: {exc}") from exc
    try:  # os.access says yes to root even on a read-only mount: try a real write
        with tempfile.TemporaryFile(dir=plant_dir):
            pass
    except OSError as exc:
        raise PlantDirError(f"plant directory {plant_dir!r} is not writable: {exc}") from exc
    return Warehouse(plant_dir, durable, logger)  # PlantDirError when it cannot be opened
