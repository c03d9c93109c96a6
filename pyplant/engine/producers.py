"""Who produces what: the static checks before any work, and finding a missing producer.

Before a body runs, the sends and receives read from every task's source (``static.py``) are
checked: two tasks sending one name literally are refused (``DuplicateProducerError``), and a
literal receive upstream of the target that nobody can send fails at once, with the closest
known name (``IngredientNotFoundError``: "did you mean 'data'?"). While running, a producer is
looked for in the plant's record of who made an ingredient, then among the tasks whose source
sends it; only tasks whose sends are built at run time are started on the chance that they
send it (discovery), each at most once per session.
"""
from __future__ import annotations

from typing import Any

from .. import static
from ..warehouse.metadata import code_digest
from ..errors import DependencyCycleError, DuplicateProducerError, IngredientNotFoundError
from .state import Need, Node, SessionState, Status


def read_sources(state: SessionState, code_maps: dict[str, dict[str, str]], tasks_source_derived: set[str],
                 scope: Any, memo: Any) -> None:
    """Fill ``state.static_io`` and ``state.senders``; refuse two literal senders of a name.

    ``code_maps`` keys the memoized table when every task's code map follows its source
    (``tasks_source_derived``); otherwise the sources are read again. A table missed (one
    reactor edited) is rebuilt from the entries of the reactors whose code maps are unchanged.
    """
    fixed = {n.name: static.StaticIO(frozenset(n.task.outputs.values()), frozenset(n.task.inputs.values()))
             for n in state.order if n.task.outputs is not None}
    from_source = [n for n in state.order if n.name not in fixed]
    complete = len(tasks_source_derived) == len(from_source)
    digests = state.code_digests
    if complete:
        for name in tasks_source_derived:  # the trace index reads them too
            if name not in digests:
                digests[name] = code_digest(code_maps[name])
    derived = {name: digests[name] for name in tasks_source_derived} if complete else {}
    state.static_io = static.load_table(memo, derived) if complete else None
    if state.static_io is None:
        known = static.load_entries(memo, derived) if complete else {}
        reached = {n.name: _sources(n, scope) for n in from_source if n.name not in known}
        state.static_io = {**known, **static.reactor_ios(reached, memo)}
        if complete:
            static.store_table(memo, derived, state.static_io, scanned=reached)
    state.static_io.update(fixed)
    for node in state.order:
        for name in _sends(node, state):
            state.senders.setdefault(name, []).append(node)
    for name, nodes in state.senders.items():
        if len(nodes) > 1:
            a, b = nodes[0].name, nodes[1].name
            raise DuplicateProducerError(
                f"reactors '{a}' and '{b}' both send ingredient '{name}'; an ingredient has "
                f"exactly one producer", reactor=b, ingredient=name)


def _sources(node: Node, scope: Any) -> list:
    return static.reached_functions(node.task.func, scope.is_user_module)


def _sends(node: Node, state: SessionState) -> frozenset[str] | tuple[str, ...]:
    fixed = node.task.sends
    return fixed if fixed is not None else state.static_io[node.name].sends


def check_producers(state: SessionState, target: Node, meta: Any) -> None:
    """Every literal receive upstream of ``target`` has a possible producer, else fail now
    (a typo must not cost the hours of work the tasks before it would take)."""
    if any(io.dynamic for io in state.static_io.values()):
        return  # some task may send any name
    seen, pending = {target.name}, [target]
    while pending:
        node = pending.pop()
        for name in sorted(state.static_io[node.name].receives):
            # a recorded producer whose source no longer sends the name cannot make it
            producers = [p for p in state.senders.get(name) or candidates(state, name, meta)
                         if state.static_io[p.name].may_send(name)]
            if not producers:
                raise not_found(state, node, name, [], meta)
            for producer in producers:
                if producer.name not in seen:
                    seen.add(producer.name)
                    pending.append(producer)


def candidates(state: SessionState, ingredient: str, meta: Any) -> list[Node]:
    """Who may produce ``ingredient`` now: its recorded producer, then the tasks whose source
    sends it (a producer renamed or split keeps its consumers' traces useful)."""
    found = list(state.senders.get(ingredient, ()))
    recorded = recorded_producer(state, ingredient, meta)
    if recorded is not None and recorded not in found:
        found.insert(0, recorded)
    return found


def first_new_candidate(state: SessionState, ingredient: str, meta: Any) -> Node | None:
    """The first of ``candidates`` not yet settled nor started (NEW), without listing them."""
    recorded = recorded_producer(state, ingredient, meta)
    if recorded is not None and recorded.status is Status.NEW:
        return recorded
    return next((p for p in state.senders.get(ingredient, ()) if p.status is Status.NEW), None)


def recorded_producer(state: SessionState, ingredient: str, meta: Any) -> Node | None:
    if state.producers is None:  # read once per session: {ingredient: producer}
        state.producers = meta.producers()
    name = state.producers.get(ingredient)
    return state.nodes.get(name) if name is not None else None


def not_found(state: SessionState, node: Node, name: str, tried: list[str], meta: Any) -> IngredientNotFoundError:
    why = f" (started as a possible {node.wanted_by})" if node.wanted_by else ""
    known = set(state.senders) | set(state.available) | set(meta.ingredient_names())
    return IngredientNotFoundError(
        f"reactor '{node.name}'{why} receives ingredient '{name}', but no reactor sends it"
        f"{static.did_you_mean(name, known)} (tried: {', '.join(tried) or 'none'}; ran or "
        f"verified this session: {', '.join(state.settled()) or 'none'}). Was its producer added "
        f"to the plant?", reactor=node.name, ingredient=name, tried=tried)


def find(state: SessionState, node: Node, name: str, meta: Any, logger: Any) -> Need:
    """What ``node`` must wait for to receive ``name``: a known producer to settle (or to run
    now, when it is still checking), else discovery.

    Raises
    ------
    DependencyCycleError
        when the only task that can send ``name`` waits, directly or not, for ``node``.
    IngredientNotFoundError
        when no task can send it.
    """
    for producer in candidates(state, name, meta):
        if producer is node:
            continue
        if producer.status is Status.NEW:
            return Need(producer)
        if producer.status is Status.CHECKING:
            return Need(producer, restart=True)
    return discover(state, node, name, recorded_producer(state, name, meta), meta, logger)


def discover(state: SessionState, node: Node, name: str, recorded: Node | None, meta: Any, logger: Any) -> Need:
    """Start the next task not yet settled in this session that may send ``name``: one whose
    source sends names built at run time (see ``static.py``)."""
    tried = state.tried.setdefault(name, [])
    while state.cursor < len(state.order):
        candidate = state.order[state.cursor]
        state.cursor += 1
        if candidate.status is Status.NEW and state.static_io[candidate.name].dynamic:
            tried.append(candidate.name)
            candidate.wanted_by = f"producer of '{name}' for reactor '{node.name}'"
            logger.debug("looking for a producer of '%s': trying reactor '%s'", name, candidate.name)
            return Need(candidate)
    unblocked = _unblocked_below(state, node)
    if unblocked is not None:  # it may send `name` once resumed (first-run discovery order)
        return Need(unblocked, resume=True)
    waiting = recorded if recorded is not None and recorded.status is Status.RUNNING else None
    if waiting is None:  # first run, no record: does a waiting task's source send it?
        waiting = next((n for n in state.stack if n is not node and n.status is Status.RUNNING
                        and name in _sends(n, state)), None)
    if waiting is not None and waiting is not node:
        cycle = [n.name for n in state.stack[state.stack.index(waiting):]] + [waiting.name]
        raise DependencyCycleError(
            f"dependency cycle: {' -> '.join(cycle)} (reactor '{node.name}' waits for "
            f"ingredient '{name}', which '{waiting.name}' sends only after it gets its inputs)",
            cycle=cycle, ingredient=name)
    raise not_found(state, node, name, tried, meta)


def _unblocked_below(state: SessionState, node: Node) -> Node | None:
    """A running task lower on the stack whose awaited ingredient has become available."""
    for other in reversed(state.stack):
        run = other.run
        if other is not node and other.status is Status.RUNNING and run is not None \
                and run.awaiting is not None and run.awaiting.name in state.available:
            return other
    return None


def check_single_producer(state: SessionState, node: Node, name: str, meta: Any) -> None:
    """Another task sent ``name`` this session, another task's source sends it literally (this
    one builds the name at run time: ``pipe.send(NAME, ...)``), or the plant records another
    producer whose source still sends it: refuse, before the value is stored.

    Raises
    ------
    DuplicateProducerError
        naming both tasks.
    """
    literal = next((p for p in state.senders.get(name, ()) if p is not node), None)
    if literal is not None:
        raise DuplicateProducerError(
            f"reactors '{literal.name}' and '{node.name}' both send ingredient '{name}'; "
            f"an ingredient has exactly one producer", reactor=node.name, ingredient=name)
    entry = state.available.get(name)
    other = entry[1] if entry is not None else recorded_producer(state, name, meta)
    if other is None or other is node:
        return
    if entry is not None or name in _sends(other, state):
        raise DuplicateProducerError(
            f"reactors '{other.name}' and '{node.name}' both send ingredient '{name}'; "
            f"an ingredient has exactly one producer", reactor=node.name, ingredient=name)
