"""Byte-level pre-parse of a chunk of seed-004 trace lines, for the ingest's fast path.

A trace line is about 15 kB, almost all of it number arrays the ingest never stores
(``selected_token_pos``, ``kv_fetch.*.hit_blocks``, ``scores_topk``) or only needs as a block
aggregate (``selected_block_ids``). :func:`prepare_chunk` walks the chunk with ``bytes.find``
(memchr speed) and, per line,

* cuts the unneeded flat arrays down to ``[]`` (exactly like ``ingest.strip_arrays``),
* cuts ``selected_block_ids`` too, keeping its text span: the spans of the whole chunk are
  joined and parsed at once by numpy after a strict check (plain non-negative integers,
  separated by ``,`` or ``, ``),
* reads ``request_id`` / ``step_idx`` / ``layer_id`` as integers (the caller checks them
  against what DuckDB parses from the stripped text),

and computes the chunk's block-level aggregate (:func:`block_heat`). Everything the fast path
cannot vouch for (a blank line, a block list that is not a plain integer array, a missing key,
...) makes it return ``None``: the caller then takes the exact path for that chunk. The module
imports nothing but numpy so worker processes start quickly; :func:`read_prepare` is what they
run (a byte range of a plain file; pure function of the bytes).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

_TIER = "STRUCT(bytes_read BIGINT, read_ops INTEGER, latency_us BIGINT, batch_size INTEGER)"
# What DuckDB's JSON reader is asked for (the exact path too; selected_block_ids only there).
STEP_COLUMNS = {
    # optional identity fields as JSON: their type is checked (OPTIONAL_TYPE_CHECK) instead of
    # letting the reader cast "3" or true to a number, as the line-by-line validator would not
    "event": "VARCHAR", "run_name": "JSON", "dataset": "JSON", "rank": "JSON",
    "request_id": "BIGINT", "layer_id": "INTEGER", "step_idx": "BIGINT",
    "seq_len_current": "BIGINT", "unique_token_pos_count": "INTEGER", "offset_min": "BIGINT",
    "offset_p50": "BIGINT", "offset_max": "BIGINT", "block_size_tokens": "INTEGER",
    "selected_block_ids": "INTEGER[]", "unique_blocks": "INTEGER",
    "tokens_per_touched_block": "STRUCT(mean DOUBLE, p50 INTEGER, p95 INTEGER)",
    "kv_fetch": f"STRUCT(hbm {_TIER}, local_pool {_TIER}, remote_pool {_TIER})",
    "prefix": "STRUCT(prefix_cache_hit BOOLEAN, prefix_cached_blocks INTEGER,"
    " prefix_key VARCHAR, intersection_ratio DOUBLE)",
    "scores_stats": "STRUCT(min DOUBLE, mean DOUBLE, max DOUBLE)",
    # optional; read only to report which lines lack them (the arrays arrive cut to [])
    "world_size": "JSON", "selected_token_pos": "JSON", "scores_topk": "JSON",
}  # fmt: skip
# Seed 004's key fields, down to the struct members stored: a row where one is missing or null
# is refused here and judged line by line by schema.validate_record (both paths agree).
_TIER_REQUIRED = tuple(
    f"kv_fetch.{t}.{k}"
    for t in ("hbm", "local_pool", "remote_pool")
    for k in ("bytes_read", "read_ops", "batch_size")
)
STEP_REQUIRED = (
    "request_id", "layer_id", "step_idx", "seq_len_current", "unique_token_pos_count",
    "offset_min", "offset_p50", "offset_max", "block_size_tokens", "selected_block_ids",
    "unique_blocks", "tokens_per_touched_block.mean", "tokens_per_touched_block.p50",
    "tokens_per_touched_block.p95", *_TIER_REQUIRED, "prefix.prefix_cache_hit",
    "prefix.prefix_cached_blocks", "prefix.prefix_key", "prefix.intersection_ratio",
)  # fmt: skip
# Lines lacking each optional field (schema.OPTIONAL_FIELDS order), over a chunk's rows.
GAP_FIELDS = ("run_name", "dataset", "rank", "world_size", "selected_token_pos", "scores")
GAP_COUNTS = (
    "count(*) FILTER (WHERE run_name IS NULL), count(*) FILTER (WHERE dataset IS NULL),"
    " count(*) FILTER (WHERE rank IS NULL), count(*) FILTER (WHERE world_size IS NULL),"
    " count(*) FILTER (WHERE selected_token_pos IS NULL),"
    " count(*) FILTER (WHERE scores_topk IS NULL AND scores_stats IS NULL)"
)
_INTS = "('UBIGINT', 'BIGINT')"
OPTIONAL_TYPE_CHECK = (
    "json_type(run_name) <> 'VARCHAR' OR json_type(dataset) <> 'VARCHAR'"
    f" OR json_type(rank) NOT IN {_INTS} OR json_type(world_size) NOT IN {_INTS}"
)  # NULL (absent) compares as NULL: not refused
# rows to refuse (then judged line by line)
EXTRA_CHECK = (
    f"event IS DISTINCT FROM 'dsa_topk' OR block_size_tokens <= 0 OR {OPTIONAL_TYPE_CHECK}"
)
# selected_token_pos that is neither absent, null nor a flat array (cut to [] and checked by
# consistent()): the exact path judges it
POS_TYPE_CHECK = "json_type(selected_token_pos) NOT IN ('NULL', 'ARRAY')"
POS_SHAPE_CHECK = f"{POS_TYPE_CHECK} OR json_array_length(selected_token_pos) > 0"
# The exact path's DuckDB check of what the fast path checks in consistent(): the rows it
# flags go to the validator.
EXACT_CHECK = (
    "NOT (offset_min <= offset_p50 AND offset_p50 <= offset_max)"
    " OR selected_block_ids <> list_sort(list_distinct(selected_block_ids))"
    " OR unique_blocks <> len(selected_block_ids)"
)
# The fast path parses selected_block_ids itself: DuckDB reads the rest.
FAST_COLUMNS = {k: v for k, v in STEP_COLUMNS.items() if k != "selected_block_ids"}
FAST_REQUIRED = tuple(c for c in STEP_REQUIRED if c != "selected_block_ids")
# dsa_steps' columns after (trace_id, line_no, byte_offset), from the reader's columns ``c``.
STEP_VALUES = """
       c.rank::INTEGER, c.request_id, c.layer_id, c.step_idx,
       c.seq_len_current, c.unique_token_pos_count, c.offset_min, c.offset_p50, c.offset_max,
       c.block_size_tokens, c.unique_blocks,
       c.tokens_per_touched_block.mean, c.tokens_per_touched_block.p50,
       c.tokens_per_touched_block.p95,
       c.kv_fetch.hbm.batch_size, c.kv_fetch.hbm.bytes_read, c.kv_fetch.hbm.read_ops,
       c.kv_fetch.hbm.latency_us,
       c.kv_fetch.local_pool.batch_size, c.kv_fetch.local_pool.bytes_read,
       c.kv_fetch.local_pool.read_ops, c.kv_fetch.local_pool.latency_us,
       c.kv_fetch.remote_pool.batch_size, c.kv_fetch.remote_pool.bytes_read,
       c.kv_fetch.remote_pool.read_ops, c.kv_fetch.remote_pool.latency_us,
       c.prefix.prefix_cache_hit, c.prefix.prefix_cached_blocks, c.prefix.prefix_key,
       c.prefix.intersection_ratio,
       round(c.prefix.intersection_ratio * c.unique_blocks)::INTEGER,
       c.scores_stats.min, c.scores_stats.mean, c.scores_stats.max"""
# Scratch files for DuckDB's reader: RAM-backed when /dev/shm is usable.
_SHM = "/dev/shm"  # noqa: S108
TMP_DIR = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None

POS_KEY = b'"selected_token_pos":'
CUT_KEYS = (POS_KEY, b'"scores_topk":', b'"hit_blocks":')
BLOCKS_KEY = b'"selected_block_ids":'
ID_KEYS = (b'"request_id":', b'"step_idx":', b'"layer_id":')
# The usual layout (the tracer's key order, either writer's spacing); anything else is looked up
# key by key (_int_after). DuckDB's parse of the same lines is compared with these values.
_IDS_RE = re.compile(
    rb'"request_id": ?(-?[0-9]+)[,}].*?"layer_id": ?(-?[0-9]+)[,}].*?"step_idx": ?(-?[0-9]+)[,}]'
)
_STRTOL_EXTRAS = (b" ", b"+", b"-", b"\x00", b"\t", b"\r", b"\x0b", b"\x0c")
_COMMA_ZERO = ord(",") | ord("0") << 8  # b",0" read as a little-endian uint16
_MAX_DENSE = 1 << 23  # cells of the bincount table (float64): 64 MB
_MAX_BLOCK = (1 << 31) - 1  # selected_block_ids is an INTEGER[] column


@dataclass
class Prepared:
    """One chunk, pre-parsed: the stripped JSON lines plus everything the heat needed."""

    n_lines: int
    starts: np.ndarray  # int64, line starts relative to the chunk
    stripped: bytes  # the lines with the number arrays cut to [] (one line per input line)
    request_id: np.ndarray  # int64 per line, as read from the bytes
    step_idx: np.ndarray
    layer_id: np.ndarray
    heat: dict[str, np.ndarray]  # request_id, step_idx, block_id, lo, hi (block_heat)
    # for consistent() against DuckDB's scalars (dropped once checked)
    blocks: np.ndarray | None = None
    block_counts: np.ndarray | None = None
    cpu_s: float = 0.0  # CPU seconds the pre-parse took (read_prepare: the read included)
    # parse_scalars: the rows' dsa_steps values (STEP_VALUES order, then run_name, dataset, the
    # line index ``idx`` and start ``off``), an Arrow table; None until parsed
    table: Any = None


def _int_after(data, key: bytes, p: int, e: int, hint: int) -> int | None:
    """The integer value of ``key`` in line ``[p, e)`` (searched from ``hint`` first)."""
    i = data.find(key, p, hint)
    if i < 0:
        i = data.find(key, hint, e)
        if i < 0:
            return None
    a = i + len(key)
    b = data.find(b",", a, e)
    c = data.find(b"}", a, e)
    if b < 0 or 0 <= c < b:
        b = c
    if b < 0:
        return None
    try:
        return int(data[a:b])
    except ValueError:
        return None


def prepare_chunk(data, size: int | None = None) -> Prepared | None:
    """Pre-parse ``data[:size]`` (complete lines; bytes or bytearray); None: take the exact path."""
    find, endswith, ids_re = data.find, data.endswith, _IDS_RE.search
    size = len(data) if size is None else size
    mv = memoryview(data)
    pieces: list = []
    put = pieces.append
    spans: list[tuple[int, int]] = []
    counts: list[int] = []
    pos_spans: list[tuple[int, int]] = []
    starts: list[int] = []
    req: list[int] = []
    step: list[int] = []
    layer: list[int] = []
    p = 0
    while p < size:
        e = find(b"\n", p, size)
        if e < 0:
            return None  # not a complete line (the reader never hands those out)
        if e - p <= 1:
            return None  # blank lines are counted by the exact path
        starts.append(p)
        q = p  # start of the not yet copied part of the line
        blocks_at = -1
        i = find(b"[", p, e)
        while i >= 0:
            j = find(b"]", i, e)
            if j < 0:
                break
            i2 = find(b"[", i + 1, e)
            if 0 <= i2 < j:  # not a flat array: left to the JSON parser
                i = i2
                continue
            k = i
            while k > p and data[k - 1] == 32:
                k -= 1
            if endswith(CUT_KEYS, p, k):
                if endswith(POS_KEY, p, k) and j > i + 1:  # its bytes are checked below
                    pos_spans.append((i + 1, j))
                put(mv[q : i + 1])
                q = j
            elif endswith(BLOCKS_KEY, p, k):
                if blocks_at >= 0:
                    return None  # the key twice: leave it to the exact path
                blocks_at = i
                put(mv[q : i + 1])
                q = j
                spans.append((i + 1, j))
                counts.append(data.count(b",", i + 1, j) + 1 if j > i + 1 else 0)
            i = i2
        if blocks_at < 0:
            return None  # no flat selected_block_ids
        put(mv[q : e + 1])
        m = ids_re(data, p, blocks_at)
        if m is not None:
            req.append(int(m[1]))
            layer.append(int(m[2]))
            step.append(int(m[3]))
        else:
            r = _int_after(data, ID_KEYS[0], p, e, blocks_at)
            s = _int_after(data, ID_KEYS[1], p, e, blocks_at)
            la = _int_after(data, ID_KEYS[2], p, e, blocks_at)
            if r is None or s is None or la is None:
                return None
            req.append(r)
            step.append(s)
            layer.append(la)
        p = e + 1
    vals = parse_int_lists(data, spans, counts)
    if vals is None:
        return None
    if pos_spans and not digits_and_commas(data, pos_spans):
        return None  # not plain non-negative integers: the exact path and validator judge
    try:
        ids = [np.array(x, dtype=np.int64) for x in (req, step, layer)]
    except OverflowError:
        return None
    cnt = np.array(counts, dtype=np.int64)
    return Prepared(
        n_lines=len(starts), starts=np.array(starts, dtype=np.int64),
        stripped=b"".join(pieces), request_id=ids[0], step_idx=ids[1], layer_id=ids[2],
        heat=block_heat(ids[0], ids[1], ids[2], vals, cnt),
        blocks=vals, block_counts=cnt,
    )  # fmt: skip


def parse_int_lists(data, spans: list[tuple[int, int]], counts: list[int]) -> np.ndarray | None:
    """All integers of the ``[s, e)`` spans (``counts`` per span), or None unless every span
    is a plain JSON list body of non-negative integers (``1,2`` or ``1, 2``) below 2**31."""
    mv = memoryview(data)
    blk = b",".join([mv[s:e] for s, e in spans if e > s])
    total = sum(counts)
    if not blk:
        return np.zeros(0, np.int64) if total == 0 else None
    if b" " in blk:
        if blk.count(b" ") != blk.count(b", "):
            return None
        blk = blk.replace(b", ", b",")
    # np.fromstring stops (an error here) at anything but a number and a comma, except for
    # what strtol skips or takes: whitespace, signs. Leading zeros are not JSON.
    if any(c in blk for c in _STRTOL_EXTRAS) or _leading_zero(blk):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            vals = np.fromstring(blk, dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if len(vals) != total or (len(vals) and int(vals.max()) > _MAX_BLOCK):
        return None
    return vals


def _leading_zero(blk: bytes) -> bool:
    """Whether a number of ``blk`` (digits and single commas) has a leading zero."""
    if blk[:1] == b"0" and blk[1:2].isdigit():
        return True
    n = len(blk)
    hits = [
        np.flatnonzero(np.frombuffer(blk, "<u2", (n - o) // 2, o) == _COMMA_ZERO) * 2 + o
        for o in (0, 1)
    ]
    nxt = np.concatenate(hits) + 2  # the character after ",0"
    nxt = nxt[nxt < n]
    return bool(np.any((np.frombuffer(blk, np.uint8)[nxt] - 48) < 10))


def block_heat(
    request_id: np.ndarray,
    step_idx: np.ndarray,
    layer_id: np.ndarray,
    vals: np.ndarray,
    counts: np.ndarray,
) -> dict[str, np.ndarray]:
    """(request, step, block, mask_lo, mask_hi): which layers (bits) selected each block.

    Line ``i`` selected ``vals[sum(counts[:i]) : sum(counts[:i + 1])]``. Groups are
    ``request_id * 2**40 + step_idx``; blocks < 0 and layers outside 0-127 are left out.

    Usually no (group, block, layer) occurs twice (each (step, layer) once, blocks unique), and
    then the OR of the layer bits is their sum: one ``np.bincount`` over 32-bit parts (float64
    sums stay exact). Whether that held is checked afterwards: the parts' set bits must number
    the tokens (a repeated bit carries and loses one). Otherwise, or when the table would be
    large, a dense boolean scatter, sliced to bound memory.
    """
    vals = np.asarray(vals, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    layer_id = np.asarray(layer_id, dtype=np.int64)
    keys = np.asarray(request_id, dtype=np.int64) * (1 << 40) + np.asarray(step_idx, np.int64)
    groups, gi = np.unique(keys, return_inverse=True)
    gi = gi.reshape(-1)
    n_tok = len(vals)
    nb = int(vals.max()) + 1 if n_tok else 0
    fast = (
        n_tok > 0
        and int(vals.min()) >= 0
        and (len(layer_id) == 0 or (int(layer_id.min()) >= 0 and int(layer_id.max()) < 128))
        and len(groups) * 4 * nb <= _MAX_DENSE
    )
    if fast:
        row = (gi * 4 + (layer_id >> 5)) * nb
        key = np.repeat(row, counts) + vals
        w = np.repeat(np.ldexp(1.0, (layer_id & 31).astype(np.int32)), counts)
        acc = np.bincount(key, weights=w, minlength=len(groups) * 4 * nb).astype(np.uint64)
        fast = int(np.bitwise_count(acc).sum()) == n_tok
    if not fast:
        return _heat_dense(groups, gi, layer_id, vals, counts)
    acc = acc.reshape(len(groups), 4, nb)
    lo = acc[:, 0] | (acc[:, 1] << np.uint64(32))
    hi = acc[:, 2] | (acc[:, 3] << np.uint64(32))
    gg, bb = np.nonzero(lo | hi)
    return _heat_out(groups[gg], bb, lo[gg, bb], hi[gg, bb])


def _heat_out(g: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    g = g.astype(np.int64)
    return {
        "request_id": g >> 40, "step_idx": g & ((1 << 40) - 1), "block_id": b.astype(np.int32),
        "lo": lo.astype(np.uint64), "hi": hi.astype(np.uint64),
    }  # fmt: skip


def _heat_dense(groups, gi, layer_id, vals, counts) -> dict[str, np.ndarray]:
    ge = np.repeat(gi, counts)
    le = np.repeat(layer_id, counts)
    ok = (vals >= 0) & (le >= 0) & (le < 128)  # heat masks cover layers 0-127
    ge, le, vals = ge[ok], le[ok], vals[ok]
    nb = int(vals.max()) + 1 if len(vals) else 0
    n_layers = int(le.max()) + 1 if len(le) else 0
    out = []
    # Dense [group, block, layer] booleans, packed to one bit per layer; groups in slices so the
    # dense array stays under ~64 MB.
    per = max(1, (64 << 20) // max(1, nb * n_layers))
    order = np.argsort(ge, kind="stable")
    ge, le, vals = ge[order], le[order], vals[order]
    bounds = np.searchsorted(ge, np.arange(0, len(groups) + per, per))
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if a == b:
            continue
        g0 = k * per
        dense = np.zeros((min(per, len(groups) - g0), nb, 128), bool)
        dense[ge[a:b] - g0, vals[a:b], le[a:b]] = True
        packed = np.packbits(dense, axis=2, bitorder="little").view("<u8")  # [g, nb, 2]
        gg, bb = np.nonzero(packed.any(axis=2))
        out.append((groups[gg + g0], bb, packed[gg, bb, 0], packed[gg, bb, 1]))
    if not out:
        e = np.zeros(0, np.int64)
        return _heat_out(e, e, e, e)
    g, b, lo, hi = (np.concatenate(x) for x in zip(*out, strict=True))
    return _heat_out(g, b, lo, hi)


_LOCAL = threading.local()  # one in-memory DuckDB per thread (studio ingests run in threads)


def parse_scalars(prep: Prepared) -> bool:
    """DuckDB's JSON reader on ``prep.stripped`` (its own in-memory database, one thread):
    fills ``prep.table`` and drops the text; False (prep unchanged) when DuckDB rejects the
    chunk, a required field is null, a row is not a dsa_topk record, or the ids the aggregate
    used differ from DuckDB's."""
    import duckdb  # here, not at module level: the fast path itself needs numpy only
    import pyarrow as pa
    import pyarrow.compute as pc

    con = getattr(_LOCAL, "con", None)
    if con is None:
        con = _LOCAL.con = duckdb.connect()
        con.execute("SET threads = 1")
    cols = "{" + ", ".join(f"{k}: '{v}'" for k, v in FAST_COLUMNS.items()) + "}"
    nulls = " OR ".join(f"{k} IS NULL" for k in FAST_REQUIRED)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", dir=TMP_DIR, delete=False) as tmp:
        tmp.write(prep.stripped)
    try:
        tb = con.sql(
            f"SELECT {STEP_VALUES}, run_name->>'$' AS run_name, dataset->>'$' AS dataset,"  # noqa: S608 - constants
            " (rank IS NOT NULL OR NULL) AS rank, (world_size IS NOT NULL OR NULL) AS world_size,"
            # presence as true / NULL: GAP_COUNTS reads these columns as it reads the chunk's
            " (selected_token_pos IS NOT NULL OR NULL) AS selected_token_pos,"
            " (scores_stats IS NOT NULL OR NULL) AS scores_stats,"
            " (scores_topk IS NOT NULL OR NULL) AS scores_topk,"
            f" ({nulls} OR {EXTRA_CHECK} OR {POS_SHAPE_CHECK}) AS refuse"
            f" FROM read_json(?, format='newline_delimited', columns={cols}) c",
            params=[tmp.name],
        ).to_arrow_table()
    except (duckdb.Error, UnicodeDecodeError):  # invalid UTF-8 surfaces as the latter
        return False
    finally:
        os.unlink(tmp.name)
    if tb.num_rows != prep.n_lines:
        return False
    if tb.num_rows and bool(pc.any(tb.column("refuse")).as_py()):
        return False
    for k, col in (("request_id", 1), ("layer_id", 2), ("step_idx", 3)):
        got = tb.column(col).to_numpy(zero_copy_only=False).astype(np.int64)
        if not np.array_equal(got, getattr(prep, k)):
            return False
    if not consistent(prep, *(tb.column(c).to_numpy(zero_copy_only=False) for c in (6, 7, 8, 10))):
        return False
    prep.blocks = prep.block_counts = None
    extra = ["run_name", "dataset", "rank", "world_size", "selected_token_pos", "scores_stats",
             "scores_topk", "refuse"]  # fmt: skip
    names = [f"v{i}" for i in range(tb.num_columns - len(extra))] + extra
    tb = tb.rename_columns(names).drop_columns(["refuse"])
    tb = tb.append_column("idx", pa.array(np.arange(prep.n_lines, dtype=np.int64)))
    prep.table = tb.append_column("off", pa.array(prep.starts))
    prep.stripped = b""
    return True


def consistent(prep: Prepared, omin, op50, omax, ublocks) -> bool:  # noqa: ANN001
    """The checks of the ingest's validator that DuckDB's types do not make, vectorised over the
    chunk (the arguments: its offset_min / p50 / max and unique_blocks columns): offsets ordered,
    ``selected_block_ids`` sorted, unique and ``unique_blocks`` many. False: the chunk goes to
    the exact path (the validator names the line and why)."""
    if prep.blocks is None or prep.block_counts is None:
        return True  # nothing kept to check (a Prepared made elsewhere)
    if not (np.all(omin <= op50) and np.all(op50 <= omax)):
        return False
    cnt, vals = prep.block_counts, prep.blocks
    if not np.array_equal(cnt, np.asarray(ublocks, dtype=np.int64)):
        return False
    if len(vals) > 1:  # strictly increasing within each line
        first = np.zeros(len(vals), dtype=bool)
        first[np.cumsum(cnt)[:-1][cnt[1:] > 0]] = True
        if np.any((np.diff(vals) <= 0) & ~first[1:]):
            return False
    return True


def digits_and_commas(data, spans: list[tuple[int, int]]) -> bool:
    """Whether the ``[s, e)`` spans hold only digits and ``,`` (or ``, ``): non-negative JSON
    integers. One ``bytes.translate`` pass, no parse: the positions are not stored, and parsing
    or range-checking them (about 2,000 a line) doubled the fast path's CPU."""
    mv = memoryview(data)
    blk = b",".join([mv[s:e] for s, e in spans])
    if b" " in blk:
        if blk.count(b" ") != blk.count(b", "):
            return False
        blk = blk.replace(b", ", b",")
    return not blk.translate(None, b"0123456789,")


def positions_plain(data) -> bool:
    """Whether every ``selected_token_pos`` in ``data`` is null or a flat list of digits and
    commas: the exact path's twin of the fast path's check (prepare_chunk, POS_SHAPE_CHECK)."""
    spans, find, i, n = [], data.find, 0, len(POS_KEY)
    while (k := find(POS_KEY, i)) >= 0:
        j = k + n
        while data[j : j + 1] == b" ":
            j += 1
        if data.startswith(b"null", j):
            i = j + 4
            continue
        e = find(b"]", j)
        if data[j : j + 1] != b"[" or e < 0 or find(b"[", j + 1, e) >= 0:
            return False  # a string, a number, a nested list: the validator says which
        if e > j + 1:
            spans.append((j + 1, e))
        i = e
    return not spans or digits_and_commas(data, spans)


_BUF: bytearray | None = None


def read_prepare(path: str, start: int, end: int) -> Prepared | None:
    """Worker entry: read bytes ``[start, end)`` of a plain file and pre-parse them."""
    global _BUF
    t0 = time.process_time()
    n = end - start
    if _BUF is None or len(_BUF) < n:
        _BUF = bytearray(max(n, 1 << 20))
    view = memoryview(_BUF)[:n]
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        got = 0
        while got < n:
            k = fh.readinto(view[got:])
            if not k:
                return None  # the file shrank: the caller takes the exact path
            got += k
    prep = prepare_chunk(_BUF, n)
    if prep is not None:
        parse_scalars(prep)  # when DuckDB refuses, the caller's exact path decides
        prep.cpu_s = time.process_time() - t0
    return prep
