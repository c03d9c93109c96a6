"""Content hashes and code hashes (stable tokens of values are in ``tokens.py``).

Every hash is xxh3-128 (``xxhash``) over a canonical encoding that starts with a domain tag, so
that a code hash can never equal a content hash of some bytes (as redun's ``hash_struct`` does).
Hex digests are 32 characters.

Code hashes follow the normalized source: the function's AST dumped without line numbers,
docstrings, and the parts that run in the enclosing code (its decorators, defaults and
annotations, which the dependency walk counts by what they produce). Comments, blank lines and
layout never change a code hash. The per-process
cache is keyed by the code object, so a hash is computed once per function per process. A
second memo, persisted in the plant's LMDB, maps the bytecode fingerprint (no line numbers) to
the normalized-source hash: a warm process, or a module loaded again from another module
object, reads and parses no source for code it has seen.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import reprlib
import textwrap
import types
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import xxhash

from .caches import BoundedCache, IdentityCache
from .errors import TokenizationError

HEX_DIGEST_CHARS = 32
_SEP = b"\x1f"

__all__ = ["TokenizationError", "digest", "bytes_hash", "array_hash", "file_hash", "code_hash",
           "short_repr", "combine", "qualified_name"]


def digest(domain: str, *parts: bytes | str) -> str:
    """xxh3-128 hex digest of ``domain`` and ``parts``, each length-prefixed (no ambiguity)."""
    h = xxhash.xxh3_128()
    h.update(domain.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(_SEP + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# --- content hashes ---------------------------------------------------------------------------

def bytes_hash(data: bytes | memoryview, domain: str = "bytes") -> str:
    """Content hash of a byte string."""
    return digest(domain, data)


def dtype_text(dtype: np.dtype) -> str:
    """A dtype as text that tells every two dtypes apart: ``dtype.str`` (``'<f8'``,
    ``'<M8[s]'``), or for a structured or sub-array dtype (whose ``str`` is only
    ``|V<size>``) each field's name, title, offset and dtype, and the item size. Content
    hashes (``array_hash``) and tokens (``tokens.py``) use it."""
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return f"{dtype_text(base)}{shape}"
    if dtype.fields is None:
        return dtype.str
    fields = []
    for name in dtype.names:
        field, offset, *title = dtype.fields[name]
        fields.append(f"{name!r}{title!r}:{dtype_text(field)}@{offset}")
    return "{" + ",".join(fields) + f"}}/{dtype.itemsize}"


def array_hash(arr: np.ndarray) -> str:
    """Content hash of an array: dtype, shape and the C-ordered bytes.

    Any fixed-size dtype works (``datetime64``, ``timedelta64``, structured, ``float16``): the
    bytes are read through a ``uint8`` view, which the buffer protocol does not refuse.

    A structured dtype counts by its fields' names, titles, offsets and dtypes: its ``str`` is
    only ``|V<size>``, so arrays whose fields were renamed, retyped or moved over the same
    bytes would otherwise share a hash, and early cutoff would serve a consumer results
    computed from the old fields. Other dtypes count by ``dtype.str`` (hashes unchanged).
    """
    arr = np.ascontiguousarray(arr)
    h = xxhash.xxh3_128()
    h.update(f"array{_SEP!r}{dtype_text(arr.dtype)}{_SEP!r}{arr.shape}".encode())
    if arr.size:
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def file_hash(path: str, block_bytes: int = 1 << 24) -> str:
    """Content hash of a file, streamed in blocks of ``block_bytes`` (16 MiB)."""
    h = xxhash.xxh3_128()
    h.update(b"file")
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            h.update(block)
    return h.hexdigest()


# --- code hashes ------------------------------------------------------------------------------

class CodeMemo(Protocol):
    """A persistent map {raw source digest: code hash}, such as the plant's LMDB table."""
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...


_code_cache: IdentityCache[str] = IdentityCache()   # {code object: code hash}
_text_cache: BoundedCache[str] = BoundedCache()     # {memo key: code hash}

# Called as listener(fingerprint, tree) with each function's source tree parsed for its code
# hash (once per function a process has not seen): a reader of the same tree (static.py) then
# needs no second parse. Decorators, defaults and docstrings are stripped from the tree.
parse_listeners: list[Callable[[str, ast.AST], None]] = []


def code_hash(func: Callable, memo: CodeMemo | None = None) -> str:
    """Hash of a function's normalized source (AST without docstrings, comments and layout).

    Falls back to the compiled code object (bytecode, constants, names) when the source is not
    available, which is as stable across processes as the interpreter version. ``memo``, when
    given, is asked before parsing, so a warm process parses no function it has seen. A
    wrapper (``functools.wraps``) is hashed by its own code: what it wraps is followed by the
    dependency walk, not hidden behind it.
    """
    code = getattr(func, "__code__", None)
    if code is None:
        return digest("callable", qualified_name(func))
    cached = _code_cache.get(code)
    if cached is not None:
        return cached
    return _code_cache.put(code, _compute_code_hash(func, code, memo))


def _compute_code_hash(func: Callable, code: types.CodeType, memo: CodeMemo | None) -> str:
    fingerprint = code_fingerprint(code)
    if code.co_name == "<lambda>":  # it shares its line with other code: bytecode is its identity
        return digest("bytecode", fingerprint)
    # Equal bytecode (names, constants, nested code; no line numbers) means equal behaviour,
    # so it keys the memo of normalized-source hashes: a warm process reads no source at all.
    memo_key = digest("code-memo-2", fingerprint)  # -2: decorators left out (_normalized_dump)
    cached = _text_cache.get(memo_key)
    if cached is None and memo is not None:
        cached = memo.get(memo_key)
    if cached is None:
        text = _raw_source(func, code)
        tree = _parse_source(func, text) if text is not None else None
        cached = digest("ast", _normalized_dump(tree)) if tree is not None else digest("bytecode", fingerprint)
        if tree is not None:
            for listener in parse_listeners:
                listener(fingerprint, tree)
        if memo is not None:
            memo.put(memo_key, cached)
    _text_cache.put(memo_key, cached)
    return cached


def source_tree(func: Callable) -> ast.AST | None:
    """The parsed source of a function (None without source), found as code hashes find it."""
    code = getattr(func, "__code__", None)
    text = _raw_source(func, code) if code is not None else None
    return _parse_source(func, text) if text is not None else None


def _raw_source(func: Callable, code: types.CodeType) -> str | None:
    """The source lines that hold ``func``, read through linecache (works for IPython cells)."""
    linecache.checkcache(code.co_filename)  # a file edited and reloaded in this process
    lines = linecache.getlines(code.co_filename, getattr(func, "__globals__", None))
    if not lines:
        return None
    last = max(_last_line(code), code.co_firstlineno)
    return "".join(lines[code.co_firstlineno - 1:last])


def _last_line(code: types.CodeType) -> int:
    """The last source line that any instruction of ``code`` or its nested code spans."""
    last = max((end for _, end, _, _ in code.co_positions() if end is not None), default=0)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            last = max(last, _last_line(const))
    return last


def _parse_source(func: Callable, text: str) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(text))
    except SyntaxError:
        pass
    source = _getsource(func)  # slower, but finds the block by tokenizing
    try:
        return None if source is None else ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None


def _getsource(func: Callable) -> str | None:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return None


def _normalized_dump(tree: ast.AST) -> str:
    """The AST without docstrings, and without what of the function itself runs in the
    enclosing code rather than in the function: decorators, default values, annotations. Its
    bytecode never holds them, so keeping them would give equal bytecode (the memo's key) two
    hashes, as ``@lru_cache def f(x=1)`` and ``def f(x=2)`` would; the dependency walk counts
    what they make instead (the wrapper and ``__wrapped__``, ``__defaults__``)."""
    outer = getattr(tree, "body", None)
    if outer and isinstance(outer[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        _strip_enclosing_parts(outer[0])
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _strip_enclosing_parts(func: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    func.decorator_list = []
    func.returns = None
    args = func.args
    args.defaults = []
    args.kw_defaults = [None] * len(args.kw_defaults)
    for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
        if arg is not None:
            arg.annotation = None


_fingerprints: IdentityCache[bytes] = IdentityCache()


def code_fingerprint(code: types.CodeType) -> bytes:
    """The bytecode fingerprint of ``code`` (see ``_bytecode_fingerprint``), cached per code
    object: it keys memos of facts read from source (code hashes, static sends)."""
    cached = _fingerprints.get(code)
    if cached is not None:
        return cached
    return _fingerprints.put(code, _bytecode_fingerprint(code))


def _bytecode_fingerprint(code: types.CodeType) -> bytes:
    """Bytecode, names, constants and signature flags of ``code`` and its nested code; no
    line numbers, so layout and comments do not change it."""
    parts = [code.co_code, repr((code.co_name, code.co_qualname, code.co_names, code.co_varnames,
                                 code.co_freevars, code.co_cellvars, code.co_argcount,
                                 code.co_posonlyargcount, code.co_kwonlyargcount,
                                 code.co_flags)).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_bytecode_fingerprint(const))
        elif isinstance(const, frozenset):  # its repr order follows PYTHONHASHSEED
            parts.append(repr(sorted(map(repr, const))).encode())
        else:
            parts.append(repr(const).encode())
    return b"\x00".join(parts)


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function, class or object's class."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class _ShortRepr(reprlib.Repr):
    """Functions and classes by qualified name, other objects without memory addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, (types.FunctionType, types.BuiltinFunctionType, type)):
            return qualified_name(x)
        if isinstance(x, types.MethodType):
            return f"{qualified_name(x.__func__)} of {self.repr1(x.__self__, level - 1)}"
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4000:  # beyond repr's digit limit
            return f"<int of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        text = reprlib.Repr.repr_instance(self, x, level)
        if " at 0x" in text:
            return f"<{type(x).__qualname__} object>"
        return text


_short = _ShortRepr()


def short_repr(value: Any, limit: int = 60) -> str:
    """A short human-readable repr of a config value, for 'why it re-ran' messages: functions
    and classes by qualified name, never a memory address."""
    text = _short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def combine(domain: str, items: Iterable[tuple[str, ...]]) -> str:
    """Digest of sorted tuples of strings: the signature of a set of (key, hash) pairs."""
    return digest(domain, *("\x1e".join(item) for item in sorted(items)))
