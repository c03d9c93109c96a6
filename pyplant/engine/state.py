"""The state of one scheduling session (one ``run_reactor`` call), explicit and documented.

After dask's local scheduler: every map the loop reads or writes is a field here, with its
shape, so an executor or a test can see exactly what the engine knows at any moment.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Sequence

from ..static import StaticIO
from ..warehouse import Trace, Version
from .tasks import Task

if TYPE_CHECKING:
    from .driver import ReactorRun
    from .verify import Facts


class Status(enum.Enum):
    """NEW -> CHECKING -> CACHED, or NEW -> RUNNING -> RAN (CHECKING -> RUNNING when no
    trace verifies)."""
    NEW = "new"
    CHECKING = "checking"
    RUNNING = "running"
    RAN = "ran"
    CACHED = "cached"


@dataclass(eq=False, slots=True)
class Node:
    """One task within a session: where its verification or its run stands."""
    task: Task
    status: Status = Status.NEW
    trace_ids: Sequence[str] = ()    # candidates, most recently used first
    checking: Trace | None = None    # the candidate being verified (trace_ids[trace_index])
    trace_index: int = 0
    input_index: int = 0             # inputs of `checking` verified so far
    trace: Trace | None = None       # the settled trace (CACHED or RAN)
    latest_trace: str | None = None  # id of the task's most recent trace when it was checked
    reason: str | None = None        # why it ran
    why: "tuple[Trace, list[str]] | None" = None  # the closest trace and its differences, when
                                     # they explain ``reason`` (inputs not settled then are
                                     # compared when the run finishes)
    forced: bool = False             # ran because forced, itself or upstream
    wanted_by: str | None = None     # "producer of 'x' for reactor 'r'" when started by discovery
    run: "ReactorRun | None" = None  # its execution, while RUNNING
    facts: "Facts | None" = None     # what is true now for it (scheduler._facts), once built
    name: str = field(init=False)    # its task's name (read on every step of the loop)

    def __post_init__(self) -> None:
        self.name = self.task.name


class Need(NamedTuple):
    """The node on top of the stack waits for ``producer``: to settle (pushed), to run now
    instead of finishing its check (``restart``), or to resume, moved to the top (``resume``).
    A named tuple: one is made for every input a warm check waits for."""
    producer: Node
    restart: bool = False
    resume: bool = False


VersionKey = tuple[str, str, "str | None"]


def version_key(version: Version) -> VersionKey:
    """Identifies a stored version; versions are immutable, so their values can be cached."""
    return (version.name, version.content_hash, version.location)


@dataclass
class SessionState:
    """Everything the loop knows during one ``run_reactor`` call.

    nodes       {task name: Node}, every task of the plant
    order       [Node] in the order tasks were added: discovery tries them in this order
    cursor      index in ``order`` of the next task discovery may start
    stack       [Node]: the top is advanced; a node waiting for a producer pushes it
    available   {ingredient: (Version, producer Node)}: settled or already sent this session
    touched     {VersionKey}: versions this session used (the others leave the value cache)
    code_maps   {task name: {label: hash}}, built for every task before any body runs
    code_digests {task name: hex digest of its code map}
    sub_hashes  {"sub:<key>": hash or None}: current code of subreactors named by traces
    tokens      {(params id, name): token}: parameter tokens, computed once per session
    static_io   {task name: StaticIO}: names its source sends and receives
    senders     {ingredient: [Node]}: tasks whose source sends it
    producers   {ingredient: task name} recorded in the plant, read once (None: not yet)
    tried       {ingredient: [task name]}: tasks discovery started looking for it
    """
    nodes: dict[str, Node]
    order: list[Node]
    cursor: int = 0
    stack: list[Node] = field(default_factory=list)
    available: dict[str, tuple[Version, Node]] = field(default_factory=dict)
    touched: set[VersionKey] = field(default_factory=set)
    code_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    code_digests: dict[str, str] = field(default_factory=dict)
    sub_hashes: dict[str, str | None] = field(default_factory=dict)
    tokens: dict[tuple[int, str], str] = field(default_factory=dict)
    static_io: dict[str, StaticIO] = field(default_factory=dict)
    senders: dict[str, list[Node]] = field(default_factory=dict)
    producers: dict[str, str] | None = None
    tried: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, tasks: list[Task]) -> "SessionState":
        nodes = {task.name: Node(task) for task in tasks}
        return cls(nodes, list(nodes.values()))

    def settled(self) -> list[str]:
        return [n.name for n in self.order if n.status in (Status.RAN, Status.CACHED)]

