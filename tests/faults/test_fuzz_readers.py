"""Property-based fuzzing of the JSON / CSV / JSONL readers (issue 17 item 7).

Property: whatever bytes a reader is given (valid files with one value replaced by an arbitrary
JSON value, a key deleted, bytes flipped / inserted / cut, or arbitrary JSON), it returns or
raises the project's ``StudioError`` (``InputError``): never a raw exception, which the CLI
would show as an internal error. Examples are bounded and derandomized (same cases on every
run), so the file runs in well under a minute.

Derandomized cases are seeded from each test's source: an edit to a test changes which cases
run. Every input a past fix was made for is therefore pinned with ``@example`` (the strategies
draw the file's bytes, so a failure prints an argument that can be pasted as an ``@example``).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import itertools
import json
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from studio_backend.errors import StudioError

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_TMP = Path(tempfile.mkdtemp(prefix="fuzz_readers_"))
_N = itertools.count()
Draw = Callable[[st.SearchStrategy[Any]], Any]  # a composite strategy's ``draw``

# Arbitrary JSON values, with what hand-written files get wrong: huge integers, NaN / inf
# (Python's json writes them), wrong containers, strings where numbers belong.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 0, 2**63, 2**70, -(2**70)])
    | st.floats()
    | st.sampled_from([1e300, -1e300])
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=10,
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``doc`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def mutate_json(draw: Draw, doc: Any) -> Any:
    """``doc`` with one value replaced by an arbitrary one, deleted, or wrapped in a list."""
    doc = copy.deepcopy(doc)
    path = draw(st.sampled_from(_paths(doc)))
    value = draw(JSON)
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    action = draw(st.sampled_from(["replace", "delete", "wrap"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "wrap":
        parent[path[-1]] = [parent[path[-1]]]
    else:
        parent[path[-1]] = value
    return doc


def mutate_bytes(draw: Draw, raw: bytes) -> bytes:
    """``raw`` with a few byte-level edits: cut, flip, insert, delete or duplicate."""
    for _ in range(draw(st.integers(1, 3))):
        n = len(raw)
        i = draw(st.integers(0, max(0, n)))
        op = draw(st.sampled_from(["cut", "flip", "insert", "delete", "dup"]))
        if op == "cut":
            raw = raw[:i]
        elif op == "flip" and i < n:
            raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif op == "insert":
            raw = raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
        elif op == "delete":
            raw = raw[:i] + raw[i + draw(st.integers(1, 16)) :]
        elif op == "dup":
            raw = raw[:i] + raw[i : i + 32] + raw[i:]
    return raw


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def document(draw: Draw, valid: Any) -> bytes:
    """Bytes of a JSON file: the valid document mutated, its bytes edited, or arbitrary JSON."""
    how = draw(st.sampled_from(["value", "value", "bytes", "arbitrary"]))
    if how == "value":
        return _dumps(mutate_json(draw, valid))
    if how == "bytes":
        return mutate_bytes(draw, _dumps(valid))
    return _dumps(draw(JSON))


def write(name: str, raw: bytes) -> Path:
    d = _TMP / f"case{next(_N)}"
    d.mkdir()
    path = d / name
    path.write_bytes(raw)
    return path


def only_studio_errors(fn: Callable[[], Any]) -> None:
    """Run a reader; anything raised must be a StudioError (the CLI's one clear line)."""
    try:
        fn()
    except StudioError:
        pass


# ---- DSA JSONL (studio dsa ingest / summarize) ---------------------------------------------


@cache
def dsa_lines() -> list[dict]:
    """The records of a small synthetic trace (written on the first draw, not at import)."""
    from studio_backend.dsa.synthetic import generate_trace

    out = _TMP / "dsa_sample"
    generate_trace(out, requests=1, steps=1, layers=3, topk=8, prompt_len=32, shared_prefix=16)
    return [json.loads(x) for x in (out / "trace_steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def workspace():
    from studio_backend.workspace import open_workspace

    ws = open_workspace(_TMP / "ws")
    yield ws
    ws.close()


def jsonl(draw: Draw, records: list[Any]) -> bytes:
    recs = list(records)
    i = draw(st.integers(0, len(recs) - 1))
    recs[i] = mutate_json(draw, recs[i])
    raw = b"\n".join(_dumps(r) for r in recs) + draw(st.sampled_from([b"\n", b""]))
    if draw(st.booleans()):
        raw = mutate_bytes(draw, raw)
    return raw


@st.composite
def dsa_trace_files(draw: Draw) -> tuple[bytes, bool]:
    """(bytes, gzipped) of a DSA steps trace: a record mutated, bytes edited, maybe gzipped."""
    raw = jsonl(draw, dsa_lines())
    gz = draw(st.booleans())
    if gz:
        raw = gzip.compress(raw)
        if draw(st.booleans()):
            raw = mutate_bytes(draw, raw)
    return raw, gz


def _dsa_line(**fields: Any) -> bytes:
    return _dumps({"event": "dsa_topk", **fields}) + b"\n"


@FUZZ
@given(file=dsa_trace_files())
# Fixed in 9d043d0 (UnicodeDecodeError): a numeric field holding a long non-ASCII string. The
# file is plain ASCII (\u20ac escapes); DuckDB's cast error quotes the value cut at a byte
# count, mid-character, and its Python binding could not decode its own message. Two offsets
# (0 and 2 modulo 3 bytes) so one of them splits a character wherever DuckDB cuts.
@example(file=(_dsa_line(offset_p50="\u20ac" * 60), False))
@example(file=(_dsa_line(offset_p50="xx" + "\u20ac" * 60), False))
def test_fuzz_dsa_trace(workspace, file: tuple[bytes, bool]) -> None:
    from studio_backend.dsa.ingest import ingest_path
    from studio_backend.dsa.summary import summarize_file

    raw, gz = file
    path = write("trace_steps.jsonl.gz" if gz else "trace_steps.jsonl", raw)
    only_studio_errors(lambda: summarize_file(path))
    only_studio_errors(lambda: ingest_path(workspace, path))


MOONCAKE = [
    {"timestamp": 0, "input_length": 40, "output_length": 5, "hash_ids": [1, 2, 3]},
    {"timestamp": 10, "input_length": 30, "output_length": 5, "hash_ids": [1, 2, 4],
     "chat_id": 9, "parent_chat_id": -1, "turn": 1, "type": "text"},
]  # fmt: skip


@FUZZ
@given(raw=st.composite(lambda draw: jsonl(draw, MOONCAKE))())
def test_fuzz_dsa_prefix_trace(workspace, raw: bytes) -> None:
    from studio_backend.dsa.ingest import ingest_path

    path = write("mooncake.jsonl", raw)
    only_studio_errors(lambda: ingest_path(workspace, path))


# ---- profile chrome-trace JSON ---------------------------------------------------------------

CHROME = {
    "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0.5,
         "dur": 10, "args": {"External id": 3, "Input Dims": [[2, 3], [3, 4]]}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
         "ts": 2, "dur": 1, "args": {"correlation": 7, "External id": 3}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 4, "dur": 3,
         "args": {"correlation": 7, "stream": 7, "device": 0, "External id": 3}},
        {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 7, "pid": 1, "tid": 1, "ts": 2},
        {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 7, "pid": 0, "tid": 7, "ts": 4,
         "bp": "e"},
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
    ],
    "displayTimeUnit": "ms",
}  # fmt: skip


def json_files(valid: Any) -> st.SearchStrategy[bytes]:
    """Bytes of a JSON file made from ``valid`` (see ``document``)."""
    return st.composite(lambda draw: document(draw, valid))()


def _chrome_with(event: int, key: str, value: Any, *, in_args: bool = False) -> bytes:
    """CHROME with one field of one event replaced (a pinned input)."""
    doc = copy.deepcopy(CHROME)
    ev = doc["traceEvents"][event]
    (ev["args"] if in_args else ev)[key] = value
    return _dumps(doc)


@FUZZ
@given(raw=json_files(CHROME))
# Fixed in 3346770 (raw AttributeError / TypeError / pyarrow errors before it):
@example(raw=_chrome_with(0, "args", [1]))  # args not an object
@example(raw=_chrome_with(0, "ph", ["X"]))  # an unhashable phase
@example(raw=_chrome_with(0, "cat", 5))  # a category that is not a string
@example(raw=_chrome_with(2, "device", 2**40, in_args=True))  # past the INTEGER column
def test_fuzz_chrome_trace(workspace, raw: bytes) -> None:
    from studio_backend.trace.formats import kineto
    from studio_backend.trace.ingest import ingest_profile

    path = write("trace.pt.trace.json", raw)
    only_studio_errors(lambda: list(kineto.read_batches(path)))
    only_studio_errors(lambda: ingest_profile(workspace, path))


# ---- expert map JSON -------------------------------------------------------------------------

EXPERT_MAP = {
    "moe_layer_count": 2,
    "layer_list": [
        {"layer_id": i, "device_count": 2,
         "device_list": [{"device_id": 0, "device_expert": [0, 1]},
                         {"device_id": 1, "device_expert": [2, 3]}]}
        for i in range(2)
    ],
}  # fmt: skip


@FUZZ
@given(raw=json_files(EXPERT_MAP))
def test_fuzz_expert_map(raw: bytes) -> None:
    from studio_backend.moe.formats import expert_map

    path = write("expert_map.json", raw)
    only_studio_errors(lambda: expert_map.read(path))


# ---- dump side files (studio_backend/dumps) ---------------------------------------------------------

RANKS = {"world_size": 2, "ranks": {"cpu_4000": {"rank": 0}, "cpu_4001": {"rank": 1}}}


@FUZZ
@given(raw=json_files(RANKS))
def test_fuzz_ranks_json(raw: bytes) -> None:
    from studio_backend.dumps.ranks_json import find_ranks

    path = write("ranks.json", raw)
    only_studio_errors(lambda: find_ranks(path.parent, up=0))


DUMP_JSON = {
    "task": "tensor",
    "level": "L0",
    "framework": "pytorch",
    "data": {
        "Module.model.layers.0.mlp.Qwen3MLP.forward.0": {
            "input_args": [{"type": "torch.Tensor", "dtype": "torch.float32", "shape": [2, 4],
                            "Max": 1.0, "Min": -1.0, "Mean": 0.0, "Norm": 2.0}],
            "output": [{"type": "torch.Tensor", "dtype": "torch.float32", "shape": [2, 4],
                        "Max": 2.0, "Min": -2.0, "Mean": 0.1, "Norm": 3.0}],
        },
        "Tensor.add.0.forward": {"input_args": [], "output": []},
    },
}  # fmt: skip


@FUZZ
@given(raw=json_files(DUMP_JSON))
def test_fuzz_msprobe_dump_json(raw: bytes) -> None:
    from studio_backend.dumps.formats.msprobe import read_dump_json_stats

    path = write("dump.json", raw)
    only_studio_errors(lambda: read_dump_json_stats(path))


STAT_ROWS = [
    ["NodeName", "NodeType", "InputOutput", "Index", "DataType", "Shape", "Max", "Min", "Mean",
     "L2Norm"],
    ["root.model.layers.0.mlp", "Qwen3MLP", "input", "0", "torch.float32", "[2, 4]", "1.0",
     "-1.0", "0.0", "2.0"],
    ["root.model.layers.0.mlp", "Qwen3MLP", "output", "0", "torch.float32", "[2, 4]", "2.0",
     "-2.0", "0.1", "3.0"],
]  # fmt: skip

CELL = st.text(max_size=10) | st.sampled_from(["", "nan", "inf", "-1", "1e999", "\x00"])


@st.composite
def statistics_csvs(draw: Draw) -> bytes:
    rows = [list(r) for r in STAT_ROWS]
    for _ in range(draw(st.integers(1, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        op = draw(st.sampled_from(["cell", "short", "long", "drop"]))
        if op == "cell":
            rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(CELL) if rows[r] else ""
        elif op == "short":
            rows[r] = rows[r][: draw(st.integers(0, len(rows[r])))]
        elif op == "long":
            rows[r] = [*rows[r], draw(CELL)]
        elif len(rows) > 1:
            del rows[r]
    raw = _csv(rows)
    return mutate_bytes(draw, raw) if draw(st.booleans()) else raw


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


@FUZZ
@given(raw=statistics_csvs())
# Fixed in 3b0a8af, merged with the fuzzer in 383c2f9 (raw UnicodeDecodeError / AttributeError):
@example(raw=_csv(STAT_ROWS).replace(b"Qwen3MLP", b"Qwen3\xffMLP", 1))  # not UTF-8
@example(raw=_csv([STAT_ROWS[0], STAT_ROWS[1][:2], STAT_ROWS[2]]))  # a short row
def test_fuzz_msit_statistics_csv(raw: bytes) -> None:
    from studio_backend.dumps.formats.msit import read_statistics_csv

    path = write("statistics.csv", raw)
    only_studio_errors(lambda: read_statistics_csv(path))
