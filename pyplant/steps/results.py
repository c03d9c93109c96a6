"""Lazy step results: what calling a ``@step`` function returns (SageMaker's ``DelayedReturn``).

A ``StepResult`` names one output of one step call. It does no work: passing it to another step
wires the graph, ``plant.run(result)`` or ``result.result()`` computes it. Using it as a value
(``bool``, ``len``, arithmetic, NumPy) raises ``StepUsageError``, which says what to do instead.
"""
from __future__ import annotations

from typing import Any, Iterator

from ..errors import StepUsageError


RETURN_SLOT = "return"


class StepResult:
    """One output of a step call, computed on demand.

    Parameters
    ----------
    call : StepCall
        The step call that produces it.
    slot : str
        ``"return"`` for the whole return value, else a name from ``returns=``.
    selector : tuple
        Keys applied to the output when it is received (``r[0]``, ``r["acc"]`` on a step
        without ``returns=``): the consumer receives ``value[k0][k1]...``.
    """

    __slots__ = ("call", "slot", "selector")

    def __init__(self, call: Any, slot: str = RETURN_SLOT, selector: tuple = ()):  # a graph.StepCall
        self.call = call
        self.slot = slot
        self.selector = selector

    # --- what a result can do ---

    def result(self) -> Any:
        """Compute this result now (and what it needs) on the active plant; return its value.

        Raises
        ------
        StepUsageError
            outside ``with Plant(...)`` and outside a pipeline run by a plant.
        """
        from .running import active_plant
        return active_plant(self).run(self)

    def __getitem__(self, key: Any) -> "StepResult":
        """``r[0]``, ``r["name"]``: an output named by ``returns=``, or an item of the value."""
        names = self._returns()
        if self.slot == RETURN_SLOT and not self.selector and isinstance(key, str) \
                and key in self.call.outputs and key != RETURN_SLOT:
            return StepResult(self.call, key)  # a named or file output
        if names and self.slot == RETURN_SLOT and not self.selector:
            if isinstance(key, int) and -len(names) <= key < len(names):
                return StepResult(self.call, names[key])
            raise StepUsageError(f"step '{self.call.name}' returns {list(names)}; {key!r} is not "
                                 f"one of them", step=self.call.name)
        return StepResult(self.call, self.slot, self.selector + (key,))

    def _returns(self) -> tuple[str, ...]:
        definition = self.call.definition
        return definition.returns if definition is not None else ()

    @property
    def outputs(self) -> dict[str, "StepResult"]:
        """``{name: StepResult}`` of a step's named and file outputs (Kubeflow's
        ``task.outputs``)."""
        return {name: StepResult(self.call, name) for name in self.call.outputs if name != RETURN_SLOT}

    def __iter__(self) -> Iterator["StepResult"]:
        names = self._returns()
        if not names or self.slot != RETURN_SLOT or self.selector:
            raise self._misuse("unpacked or iterated", "call .result() to compute it now, pass it to "
                               "another step, or declare @step(returns=(...)) to unpack its outputs")
        return iter([StepResult(self.call, name) for name in names])

    @property
    def ingredient(self) -> str:
        """The name of the ingredient that holds this output (before any selector)."""
        return self.call.outputs[self.slot]

    def __repr__(self) -> str:
        where = "" if self.slot == RETURN_SLOT else f"[{self.slot!r}]"
        picks = "".join(f"[{k!r}]" for k in self.selector)
        return f"<StepResult of {self.call.name}{where}{picks}>"

    # --- what it refuses ---

    def _misuse(self, what: str, instead: str = "") -> StepUsageError:
        hint = instead or ("call .result() to compute it now, or pass it to another step, which "
                           "receives the value")
        return StepUsageError(f"{self!r} is a lazy step result and cannot be {what}; {hint}",
                              step=self.call.name)

    def __bool__(self) -> bool:
        raise self._misuse("tested for truth")

    def __len__(self) -> int:
        raise self._misuse("measured with len()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._misuse("converted to an array")

    def __float__(self) -> float:
        raise self._misuse("converted to float")

    def __int__(self) -> int:
        raise self._misuse("converted to int")

    def __index__(self) -> int:
        raise self._misuse("used as an index")

    def __contains__(self, item: Any) -> bool:
        raise self._misuse("searched with 'in'")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._misuse(f"asked for attribute '{name}'")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        raise self._misuse("compared")

    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__  # type: ignore[assignment]

    def _arith(self, *_: Any) -> Any:
        raise self._misuse("used in arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _arith
    __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __neg__ = __pos__ = __abs__ = _arith
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __invert__ = _arith


def results_in(value: Any) -> list[StepResult]:
    """Every StepResult inside ``value`` (lists, tuples, dicts, sets, nested), in order."""
    found: list[StepResult] = []
    _walk(value, found)
    return found


def _walk(value: Any, found: list[StepResult]) -> None:
    if isinstance(value, StepResult):
        found.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _walk(item, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(key, found)
            _walk(item, found)


def substitute(value: Any, resolve: Any, leaf: Any = None) -> Any:
    """``value`` with every StepResult replaced by ``resolve(result)``, containers rebuilt;
    with ``leaf``, every other item (not a container) replaced by ``leaf(item)``."""
    if isinstance(value, StepResult):
        return resolve(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [substitute(item, resolve, leaf) for item in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        return type(value)((substitute(k, resolve, leaf), substitute(v, resolve, leaf))
                           for k, v in value.items())
    return value if leaf is None else leaf(value)


# Marks stand for results where arguments are tokened: '<input x[0]>' in the parameters of a
# trace (tasks.py), '<result 0>' in the identity of a call (graph.py). A literal str spelled
# like a mark gets a prefix, so that no literal argument tokens like a result (a list
# [r, '<input x[1]>'] must not verify the trace of ['<input x[0]>', r]).
_MARKS = ("<input ", "<result ", "<literal>")


def escape_mark(value: Any) -> Any:
    """``value``, or ``'<literal>' + value`` for a str that starts like a mark."""
    if isinstance(value, str) and value.startswith(_MARKS):
        return "<literal>" + value
    return value


def select(result: StepResult, value: Any, consumer: str | None = None) -> Any:
    """``value[k0][k1]...``: the item a result indexed before it was used (``r[0]``, ``r["acc"]``).

    Raises
    ------
    StepUsageError
        naming the consumer step (or the result's step) when the value has no such item.
    """
    for key in result.selector:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError) as exc:
            who = consumer or result.call.name
            raise StepUsageError(f"step '{who}' uses {result!r}, but the value of "
                                 f"'{result.ingredient}' ({type(value).__name__}) has no item "
                                 f"{key!r}: {exc}", step=who, ingredient=result.ingredient) from exc
    return value
