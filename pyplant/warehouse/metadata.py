"""Names kept for code written against the single-module metadata store.

``MetadataStore`` is the LMDB store (``lmdb_store.LmdbMetadata``); the records and the trace
index keys are defined in ``records.py``.
"""
from .lmdb_store import LmdbMetadata as MetadataStore, decode
from .records import Trace, Version, code_digest, trace_index_key

__all__ = ["MetadataStore", "decode", "Trace", "Version", "code_digest", "trace_index_key"]
