"""Trace verification as pure functions: a trace against what is true now.

A trace verifies when every fact it recorded still holds (Shake's and Salsa's verifying traces;
"Build systems a la carte", Mokhov, Mitchell and Peyton Jones, 2018):

=============  ==============================================================================
code           the code map now equals the recorded one (labels and hashes), subreactors too
parameters     each non-auxiliary parameter it read has the recorded token
external       each environment variable, input file and directory listing it read is unchanged
inputs         each ingredient it received has the recorded content hash, once its producer is
               settled: a producer that re-ran and made identical bytes stops the wave there
               (early cutoff)
=============  ==============================================================================

Each check returns the list of differences, worded for people ("config parameter 'C' changed
from 0.1 to 1.0"); an empty list means it holds. ``Facts`` gathers what "now" is, as functions,
so the scheduler passes its caches and a unit test passes dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Mapping

from .. import hashing, tracking
from ..warehouse import Trace

PENDING = object()  # an input whose producer is not settled yet
MAX_REASONS = 6


@dataclass(frozen=True)
class Facts:
    """What is true now, for comparing traces with (see the module docstring).

    code          {label: hash}: the task's code map now
    sub_hash      label -> hash of a subreactor now, None when it no longer exists
    param         name -> (token, shown value) now, None when the parameter is gone
    auxiliary     name -> True when the parameter is auxiliary now (never compared)
    env           the environment variables now
    file_digest   path -> content hash now, None when the file is gone
    listing       path -> listing hash now, None when the directory is gone
    input_hash    ingredient -> content hash now, None when nothing produces it, ``PENDING``
                  when its producer has not settled yet
    slots         the input slots of a task whose inputs are fixed in advance, else None
    kind          what the task is called in reasons: "reactor" (parameters are config
                  parameters) or "step" (parameters are its arguments)
    """
    code: Mapping[str, str]
    sub_hash: Callable[[str], str | None] = lambda label: None
    param: Callable[[str], tuple[str, str] | None] = lambda name: None
    auxiliary: Callable[[str], bool] = lambda name: False
    env: Mapping[str, str] = field(default_factory=dict)
    file_digest: Callable[[str], str | None] = lambda path: None
    listing: Callable[[str], str | None] = lambda path: None
    input_hash: Callable[[str], object] = lambda name: None
    kind: str = "reactor"
    slots: Collection[str] | None = None

    @property
    def param_noun(self) -> str:
        return "config parameter" if self.kind == "reactor" else "argument"


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one trace: ``differences`` (empty: it verifies) or, when the
    check stopped at an input whose producer must settle first, ``pending`` names it."""
    differences: tuple[str, ...] = ()
    pending: str | None = None

    @property
    def holds(self) -> bool:
        return not self.differences and self.pending is None


def verify(task: str, trace: Trace, facts: Facts) -> Verdict:
    """Check every fact of ``trace`` against ``facts``; stops at the first pending input."""
    found = static_differences(task, trace, facts)
    for ingredient, recorded in trace.inputs.items():
        now = facts.input_hash(ingredient)
        if now is PENDING:
            return Verdict(tuple(found), pending=ingredient)
        if now != recorded:
            found.append(input_change(ingredient, now))
    return Verdict(tuple(found))


def static_differences(task: str, trace: Trace, facts: Facts) -> list[str]:
    """Differences that need no producer to settle: code, parameters, input slots, external
    inputs."""
    return (code_differences(task, trace, facts) + param_differences(trace, facts)
            + slot_differences(trace, facts) + external_differences(trace, facts))


def slot_differences(trace: Trace, facts: Facts) -> list[str]:
    """For a task whose inputs are fixed in advance (a step call): the trace must have
    received exactly the slots the task receives now (a result added to a list argument)."""
    if facts.slots is None or set(trace.inputs) == set(facts.slots):
        return []
    added, gone = sorted(set(facts.slots) - set(trace.inputs)), sorted(set(trace.inputs) - set(facts.slots))
    return [f"inputs changed: now receives {', '.join(added) or 'nothing new'}"
            + (f", no longer {', '.join(gone)}" if gone else "")]


def static_holds(task: str, trace: Trace, code: Mapping[str, str], facts: Callable[[], Facts],
                 fixed_inputs: bool = False) -> bool:
    """``not static_differences(task, trace, facts())``, for the check every task makes on a
    warm run: a trace that recorded nothing but a code map equal to ``code`` (the task's code
    map now) holds unless one of its subreactors changed, and ``facts`` is called (built) only
    when a subreactor is among its labels or it recorded more (parameters, external inputs),
    or when the task's inputs are fixed in advance (``fixed_inputs``: its slots are compared)."""
    recorded = trace.code
    if trace.config or trace.env or trace.files or trace.dirs or recorded != code:
        return not static_differences(task, trace, facts())
    if fixed_inputs:  # a step call: the slots it receives count too
        return not static_differences(task, trace, facts())
    subs = [label for label in recorded if label.startswith("sub:")]
    return not subs or not code_differences(task, trace, facts())


def code_differences(task: str, trace: Trace, facts: Facts) -> list[str]:
    found = []
    for label, recorded in trace.code.items():
        now = facts.sub_hash(label) if label.startswith("sub:") else facts.code.get(label)
        if now != recorded:
            found.append(code_change_reason(task, label, recorded, now, facts.kind))
    for label in sorted(facts.code.keys() - trace.code.keys()):
        found.append(code_change_reason(task, label, None, facts.code[label], facts.kind))
    return found


def param_differences(trace: Trace, facts: Facts) -> list[str]:
    found = []
    for name, (token, shown) in trace.config.items():
        if facts.auxiliary(name):
            continue
        now = facts.param(name)
        if now is None:
            found.append(f"{facts.param_noun} '{name}' was removed")
        elif now[0] != token:
            found.append(f"{facts.param_noun} '{name}' changed from {shown} to {now[1]}")
    return found


def external_differences(trace: Trace, facts: Facts) -> list[str]:
    found = ["the names of the environment variables changed" if name == tracking.ENV_NAMES
             else f"environment variable {name} changed"
             for name, value in trace.env.items() if tracking.env_value(facts.env, name) != value]
    for path, digest in trace.files.items():
        now = facts.file_digest(path)
        if now != digest:
            shown = tracking.display_path(path)
            found.append(f"input file {shown} is gone" if now is None else f"input file {shown} changed")
    for path, digest in trace.dirs.items():
        if facts.listing(path) != digest:
            found.append(f"directory listing of {tracking.display_path(path)} changed")
    return found


def input_change(ingredient: str, now: object) -> str:
    return f"input '{ingredient}' changed" if now is not None else f"input '{ingredient}' is no longer produced"


def input_differences(trace: Trace, facts: Facts) -> list[str]:
    """Inputs whose content now differs, among those whose producers are settled."""
    found = []
    for ingredient, recorded in trace.inputs.items():
        now = facts.input_hash(ingredient)
        if now is not PENDING and now is not None and now != recorded:
            found.append(input_change(ingredient, now))
    return found


def closest(task: str, traces: Iterable[Trace], facts: Facts) -> list[str] | None:
    """Every difference against the trace with the fewest (code, parameters, external,
    settled inputs); None without traces to compare with."""
    found = closest_trace(task, traces, facts)
    return None if found is None else found[1]


def closest_trace(task: str, traces: Iterable[Trace], facts: Facts) -> tuple[Trace, list[str]] | None:
    """``closest``, with the trace it compares with."""
    best: tuple[Trace, list[str]] | None = None
    for trace in traces:
        found = static_differences(task, trace, facts) + input_differences(trace, facts)
        if found and (best is None or len(found) < len(best[1])):
            best = (trace, found)
    return best


def received_differences(trace: Trace, received: Mapping[str, str], known: list[str]) -> list[str]:
    """The inputs a run received that differ from ``trace``'s, not yet among ``known``
    reasons: when code changed, a run starts before its inputs settle, and only its end
    knows them."""
    found = []
    for slot, recorded in trace.inputs.items():
        now = received.get(slot)
        if now is not None and now != recorded:
            reason = input_change(slot, now)
            if reason not in known:
                found.append(reason)
    return found


def summarize(reasons: list[str], limit: int = MAX_REASONS) -> str:
    """'a; b; c; and N more': at most ``limit`` distinct reasons, in order (several labels of
    one function word the same reason)."""
    reasons = list(dict.fromkeys(reasons))
    shown = reasons[:limit] + ([f"and {len(reasons) - limit} more"] if len(reasons) > limit else [])
    return "; ".join(shown)


def code_change_reason(task: str, label: str, before: str | None, now: str | None,
                       task_kind: str) -> str:
    """'code changed: ...' naming the function, constant or library that changed."""
    kind, _, what = label.partition(":")
    if label == "reactor":
        return f"code changed: {task_kind} '{task}'"
    if label == "command":  # a program run as a step
        return f"command line changed: {task_kind} '{task}'"
    if before is None:
        return f"code changed: '{task}' now depends on {what}"
    if now is None:
        return f"code changed: {what} is gone"
    if kind == "lib":
        return f"library {what} changed version {before} -> {now}"
    noun = {"fn": "function", "cls": "class", "const": "constant", "sub": "subreactor", "obj": "object",
            "name": "name"}.get(kind, kind)
    return f"code changed: {noun} {what}"


def shown(value: object) -> str:
    """How a parameter value appears in reasons (functions by qualified name)."""
    return hashing.short_repr(value)
