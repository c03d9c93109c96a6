"""The code a reactor depends on: its own, and everything it reaches, transitively.

A reactor's **code map** is ``{label: hash}`` over everything reachable from it: the globals
and module attributes its bytecode names, its defaults and closure cells, what those hold, and
so on. The rule: whatever the walk reaches is followed, never silently dropped.

=======================  =====================================================================
``reactor``              the reactor's own code (normalized source) and the values bound to it
                         (defaults, closure cells)
``fn:module.qualname``   a user function, labelled where its code lives (its globals'
                         ``__name__`` and ``co_qualname``: a ``functools.wraps`` wrapper and
                         what it wraps never share a label); its code and bound values
``cls:module.qualname``  a user class: its methods, bases and attributes (containers too)
``const:module.name``    a global (or module attribute) holding data, by stable token
                         (``tokens.py``): containers element-wise, arrays by content; the
                         functions and classes inside count by label and are followed
``obj:module.name``      an instance of a user class: its class is followed, its attributes
                         count (less the state ones, see ``state.py``)
``name:module.name``     a global bound to code defined elsewhere or under another name, or
                         to a callable object: a decorated function, ``f = make_filter(3)``,
                         an ``lru_cache`` wrapper, a partial, ``from numpy import median as c``
``lib:package``          a library, by its installed version, not its source (``lib:python``
                         for the standard library: the interpreter's version)
=======================  =====================================================================

Code is what has code: functions, classes, anything with ``__wrapped__`` (followed into what
it wraps: ``functools.lru_cache``, ``functools.wraps`` decorators) or ``__func__`` (bound
methods), partials (into their function, arguments and keywords). Names are separated by how
the bytecode uses them (``bytecode.py``): ``np.linalg.solve`` reads the global ``np`` and
selects attributes of user modules only, so a reactor named ``solve`` elsewhere does not count.

Not counted: pyplant's own objects (upgrading pyplant must not re-run everything); resources
with no result-relevant state (locks, loggers, files, executors, weak references); state, that
reachable code mutates at run time (``state.py``), computed over all the reactors of a session
(``code_maps``); a pinned function (``version=``) is a leaf: its version stands for its code and
for everything it calls. A value with no stable representation is logged once per process at
WARNING by the ``pyplant`` logger: "changes to ... are not tracked".

"User code" is any module outside the standard library and site-packages, plus ``__main__``
(labelled by the name its file is imported as, see ``naming.py``); ``CodeScope`` moves packages
either way. Cycles are fine: the walk is a graph with a visited set. Per process, each code
object is hashed and analysed once (and both are kept in the plant's memo, so a warm process
reads no source and decodes no bytecode it has seen); per session, each value is tokenized once.

Modules: ``scope.py`` says which code is the user's, ``walk.py`` walks what code reaches and
values it, this module computes the maps (``CodeMapper``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from . import collector
from .scope import CodeScope, library_version
from .walk import _Walk

__all__ = ["CodeMapper", "CodeScope", "library_version"]


class CodeMapper:
    """Computes code maps; one per run, so globals re-bound in a notebook are seen.

    Parameters
    ----------
    own_hash : callable
        ``f(func) -> str``: the hash of one function's own code (the built-in normalized-source
        hash, a plant's ``functionHash``, or a pinned ``version=``).
    scope : CodeScope
        What counts as user code.
    memo : hashing.CodeMemo, optional
        Where facts read from bytecode are kept across processes (the plant's LMDB table).
    """

    def __init__(self, own_hash: Callable[[Callable], str], scope: CodeScope, memo: Any = None):
        self.own_hash = own_hash
        self.scope = scope
        self.memo = memo

    def code_map(self, func: Any) -> dict[str, str]:
        """``{label: hash}`` of ``func`` (labelled 'reactor') and all it reaches; the state is
        what the code reachable from ``func`` alone mutates."""
        name = getattr(func, "__name__", None) or "reactor"
        return self.code_maps({name: func})[name]

    def code_maps(self, funcs: Mapping[str, Callable]) -> dict[str, dict[str, str]]:
        """``{name: code map}`` of every reactor of a session, walked together: a value that
        any of them mutates is state for all of them (reactor A appends to ``RESULTS``,
        reactor B reads it), and every value is tokenized once.

        Call it before any reactor runs: state is left out by what the code does, constants
        are taken as they are at that time.
        """
        # The walk keeps a node per object it reaches until the maps are done; the cyclic
        # collector would scan them over and over (a full pass every few hundred reactors).
        with collector.paused():
            return _Walk(self.own_hash, self.scope, self.memo).maps(funcs)
