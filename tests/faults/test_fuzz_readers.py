"""Property-based fuzzing of the JSON / CSV / JSONL readers (issue 17 item 7).

Property: whatever bytes a reader is given (valid files with one value replaced by an arbitrary
JSON value, a key deleted, bytes flipped / inserted / cut, or arbitrary JSON), it returns or
raises the project's ``StudioError`` (``InputError``): never a raw exception, which the CLI
would show as an internal error. Examples are bounded and derandomized (same cases on every
run), so the file runs in well under a minute.
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
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
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


def mutate_json(data: st.DataObject, doc: Any) -> Any:
    """``doc`` with one value replaced by an arbitrary one, deleted, or wrapped in a list."""
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(JSON)
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    action = data.draw(st.sampled_from(["replace", "delete", "wrap"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "wrap":
        parent[path[-1]] = [parent[path[-1]]]
    else:
        parent[path[-1]] = value
    return doc


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` with a few byte-level edits: cut, flip, insert, delete or duplicate."""
    for _ in range(data.draw(st.integers(1, 3))):
        n = len(raw)
        i = data.draw(st.integers(0, max(0, n)))
        op = data.draw(st.sampled_from(["cut", "flip", "insert", "delete", "dup"]))
        if op == "cut":
            raw = raw[:i]
        elif op == "flip" and i < n:
            raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif op == "insert":
            raw = raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]
        elif op == "delete":
            raw = raw[:i] + raw[i + data.draw(st.integers(1, 16)) :]
        elif op == "dup":
            raw = raw[:i] + raw[i : i + 32] + raw[i:]
    return raw


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def document(data: st.DataObject, valid: Any) -> bytes:
    """Bytes of a JSON file: the valid document mutated, its bytes edited, or arbitrary JSON."""
    how = data.draw(st.sampled_from(["value", "value", "bytes", "arbitrary"]))
    if how == "value":
        return _dumps(mutate_json(data, valid))
    if how == "bytes":
        return mutate_bytes(data, _dumps(valid))
    return _dumps(data.draw(JSON))


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


@pytest.fixture(scope="module")
def dsa_lines() -> list[dict]:
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


def jsonl(data: st.DataObject, records: list[Any]) -> bytes:
    recs = list(records)
    i = data.draw(st.integers(0, len(recs) - 1))
    recs[i] = mutate_json(data, recs[i])
    raw = b"\n".join(_dumps(r) for r in recs) + data.draw(st.sampled_from([b"\n", b""]))
    if data.draw(st.booleans()):
        raw = mutate_bytes(data, raw)
    return raw


@FUZZ
@given(data=st.data())
def test_fuzz_dsa_trace(dsa_lines, workspace, data) -> None:
    from studio_backend.dsa.ingest import ingest_path
    from studio_backend.dsa.summary import summarize_file

    raw = jsonl(data, dsa_lines)
    gz = data.draw(st.booleans())
    if gz:
        raw = gzip.compress(raw)
        if data.draw(st.booleans()):
            raw = mutate_bytes(data, raw)
    path = write("trace_steps.jsonl.gz" if gz else "trace_steps.jsonl", raw)
    only_studio_errors(lambda: summarize_file(path))
    only_studio_errors(lambda: ingest_path(workspace, path))


MOONCAKE = [
    {"timestamp": 0, "input_length": 40, "output_length": 5, "hash_ids": [1, 2, 3]},
    {"timestamp": 10, "input_length": 30, "output_length": 5, "hash_ids": [1, 2, 4],
     "chat_id": 9, "parent_chat_id": -1, "turn": 1, "type": "text"},
]  # fmt: skip


@FUZZ
@given(data=st.data())
def test_fuzz_dsa_prefix_trace(workspace, data) -> None:
    from studio_backend.dsa.ingest import ingest_path

    path = write("mooncake.jsonl", jsonl(data, MOONCAKE))
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


@FUZZ
@given(data=st.data())
def test_fuzz_chrome_trace(workspace, data) -> None:
    from studio_backend.trace.formats import kineto
    from studio_backend.trace.ingest import ingest_profile

    raw = document(data, CHROME)
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
@given(data=st.data())
def test_fuzz_expert_map(data) -> None:
    from studio_backend.moe.formats import expert_map

    path = write("expert_map.json", document(data, EXPERT_MAP))
    only_studio_errors(lambda: expert_map.read(path))


# ---- dump side files (studio_backend/dumps) ---------------------------------------------------------

RANKS = {"world_size": 2, "ranks": {"cpu_4000": {"rank": 0}, "cpu_4001": {"rank": 1}}}


@FUZZ
@given(data=st.data())
def test_fuzz_ranks_json(data) -> None:
    from studio_backend.dumps.ranks_json import find_ranks

    path = write("ranks.json", document(data, RANKS))
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
@given(data=st.data())
def test_fuzz_msprobe_dump_json(data) -> None:
    from studio_backend.dumps.formats.msprobe import read_dump_json_stats

    path = write("dump.json", document(data, DUMP_JSON))
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


def statistics_csv(data: st.DataObject) -> bytes:
    rows = [list(r) for r in STAT_ROWS]
    for _ in range(data.draw(st.integers(1, 3))):
        r = data.draw(st.integers(0, len(rows) - 1))
        op = data.draw(st.sampled_from(["cell", "short", "long", "drop"]))
        if op == "cell":
            rows[r][data.draw(st.integers(0, len(rows[r]) - 1))] = (
                data.draw(CELL) if rows[r] else ""
            )
        elif op == "short":
            rows[r] = rows[r][: data.draw(st.integers(0, len(rows[r])))]
        elif op == "long":
            rows[r] = [*rows[r], data.draw(CELL)]
        elif len(rows) > 1:
            del rows[r]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    raw = buf.getvalue().encode("utf-8", "surrogatepass")
    return mutate_bytes(data, raw) if data.draw(st.booleans()) else raw


@FUZZ
@given(data=st.data())
def test_fuzz_msit_statistics_csv(data) -> None:
    from studio_backend.dumps.formats.msit import read_statistics_csv

    path = write("statistics.csv", statistics_csv(data))
    only_studio_errors(lambda: read_statistics_csv(path))
