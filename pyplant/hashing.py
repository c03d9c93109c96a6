"""Content hashes, code hashes and stable tokens of config values.

Every hash is xxh3-128 (``xxhash``) over a canonical encoding that starts with a domain tag, so
that a code hash can never equal a content hash of some bytes (as redun's ``hash_struct`` does).
Hex digests are 32 characters.

Code hashes follow the normalized source: the function's AST dumped without line numbers, and
without docstrings. Comments, blank lines and layout never change a code hash. The per-process
cache is keyed by the code object, so a hash is computed once per function per process. A
second memo, persisted in the plant's LMDB, maps the bytecode fingerprint (no line numbers) to
the normalized-source hash: a warm process, or a module loaded again from another module
object, reads and parses no source for code it has seen.
"""
from __future__ import annotations

import ast
import enum
import functools
import inspect
import linecache
import pickle
import textwrap
import types
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import xxhash

HEX_DIGEST_CHARS = 32
_SEP = b"\x1f"


class TokenizationError(TypeError):
    """A config value has no stable representation (its repr holds a memory address)."""


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


def array_hash(arr: np.ndarray) -> str:
    """Content hash of an array: dtype, shape and the C-ordered buffer."""
    arr = np.ascontiguousarray(arr)
    h = xxhash.xxh3_128()
    h.update(f"array{_SEP!r}{arr.dtype.str}{_SEP!r}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")
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


_code_cache: dict[int, tuple[types.CodeType, str]] = {}
_text_cache: dict[str, str] = {}


def code_hash(func: Callable, memo: CodeMemo | None = None) -> str:
    """Hash of a function's normalized source (AST without docstrings, comments and layout).

    Falls back to the compiled code object (bytecode, constants, names) when the source is not
    available, which is as stable across processes as the interpreter version. ``memo``, when
    given, is asked before parsing, so a warm process parses no function it has seen.
    """
    if hasattr(func, "__wrapped__"):
        func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None:
        return digest("callable", _qualified_name(func))
    cached = _code_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    result = _compute_code_hash(func, code, memo)
    _code_cache[id(code)] = (code, result)
    return result


def _compute_code_hash(func: Callable, code: types.CodeType, memo: CodeMemo | None) -> str:
    fingerprint = code_fingerprint(code)
    if code.co_name == "<lambda>":  # it shares its line with other code: bytecode is its identity
        return digest("bytecode", fingerprint)
    # Equal bytecode (names, constants, nested code; no line numbers) means equal behaviour,
    # so it keys the memo of normalized-source hashes: a warm process reads no source at all.
    memo_key = digest("code-memo", fingerprint)
    cached = _text_cache.get(memo_key)
    if cached is None and memo is not None:
        cached = memo.get(memo_key)
    if cached is None:
        text = _raw_source(func, code)
        tree = _parse_source(func, text) if text is not None else None
        cached = digest("ast", _normalized_dump(tree)) if tree is not None else digest("bytecode", fingerprint)
        if memo is not None:
            memo.put(memo_key, cached)
    _text_cache[memo_key] = cached
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
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


_fingerprints: dict[int, tuple[types.CodeType, bytes]] = {}


def code_fingerprint(code: types.CodeType) -> bytes:
    """The bytecode fingerprint of ``code`` (see ``_bytecode_fingerprint``), cached per code
    object: it keys memos of facts read from source (code hashes, static sends)."""
    cached = _fingerprints.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    fingerprint = _bytecode_fingerprint(code)
    _fingerprints[id(code)] = (code, fingerprint)
    return fingerprint


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


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


# --- stable tokens of config values -----------------------------------------------------------

def stable_token(value: Any, code_hasher: Callable[[Callable], str] = code_hash) -> str:
    """A hash of ``value`` that is equal across processes exactly when the values are equal.

    Containers are walked, arrays hashed by content, callables by their code hash, slices and
    ranges by their fields, objects by class and attributes.

    Raises
    ------
    TokenizationError
        when the value has no stable representation (for example a repr with a memory address
        and no attributes to walk, and it cannot be pickled).
    """
    return digest("token", _encode(value, code_hasher, 0))


def _encode(value: Any, code_hasher: Callable[[Callable], str], depth: int) -> str:
    if depth > 50:
        raise TokenizationError("config value is nested more than 50 levels deep")
    enc = lambda v: _encode(v, code_hasher, depth + 1)  # noqa: E731
    kind = type(value)
    if value is None or kind in (bool, int, float, complex, str, bytes):
        return f"{kind.__name__}:{value!r}"
    if kind is slice:
        return f"slice({enc(value.start)},{enc(value.stop)},{enc(value.step)})"
    if kind is range:
        return f"range({value.start},{value.stop},{value.step})"
    if isinstance(value, enum.Enum):
        return f"enum:{_qualified_name(kind)}.{value.name}"
    if isinstance(value, (tuple, list)):
        return f"{_qualified_name(kind)}[{','.join(enc(v) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"{kind.__name__}{{{','.join(sorted(enc(v) for v in value))}}}"
    if isinstance(value, dict):
        items = sorted(f"{enc(k)}:{enc(v)}" for k, v in value.items())
        return f"{_qualified_name(kind)}{{{','.join(items)}}}"
    if isinstance(value, np.ndarray):
        return f"ndarray:{array_hash(value)}" if value.dtype != object else f"ndarray[{enc(value.tolist())}]"
    if isinstance(value, np.generic):
        return f"np:{value.dtype.str}:{value!r}"
    if isinstance(value, type):
        return f"type:{_qualified_name(value)}"
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)):
        return _encode_callable(value, code_hasher, enc)
    return _encode_object(value, enc)


def _encode_callable(value: Any, code_hasher: Callable[[Callable], str], enc: Callable[[Any], str]) -> str:
    if isinstance(value, functools.partial):
        return f"partial({enc(value.func)},{enc(value.args)},{enc(value.keywords)})"
    if isinstance(value, types.MethodType):
        return f"method({enc(value.__func__)})"
    if isinstance(value, types.BuiltinFunctionType):
        return f"builtin:{_qualified_name(value)}"
    return f"code:{code_hasher(value)}"


def _encode_object(value: Any, enc: Callable[[Any], str]) -> str:
    attrs = getattr(value, "__dict__", None)
    if attrs is not None and not callable(value):
        public = {k: v for k, v in attrs.items() if not k.startswith("_pyplant")}
        return f"obj:{_qualified_name(type(value))}{enc(public)}"
    text = repr(value)
    if " at 0x" not in text:
        return f"repr:{_qualified_name(type(value))}:{text}"
    try:
        return f"pickle:{bytes_hash(pickle.dumps(value, protocol=5))}"
    except Exception as exc:
        raise TokenizationError(f"cannot make a stable token of {text}: {exc}") from exc


def short_repr(value: Any, limit: int = 60) -> str:
    """A short human-readable repr of a config value, for 'why it re-ran' messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def combine(domain: str, items: Iterable[tuple[str, ...]]) -> str:
    """Digest of sorted tuples of strings: the signature of a set of (key, hash) pairs."""
    return digest(domain, *("\x1e".join(item) for item in sorted(items)))
