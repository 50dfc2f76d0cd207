"""SGLang dumps (hook folder and dumper records) ingest and stitch to the unsharded truth.

The dumps come from ``sglang_docs_fixture`` (written from SGLang's source by another author);
the truth is its float64 forward pass. Concatenations must be exact, partial sums within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio_backend.dumps import query
from studio_backend.dumps.detect import detect
from studio_backend.dumps.ingest import ingest_dump
from tests.dumps.sglang_docs_fixture import write_dumper_dump, write_hook_dump

SUMS = {"o_partial", "moe_partial"}  # summed over ranks: float32 rounding differs
CORE = {"input_ids", "seq_lens", "positions", "req_pool_indices"}


def _stitched(ws, run: str) -> dict[tuple, int]:
    df = query.find_tensors(ws, run)
    whole = df[df.part.isna()]
    out = {}
    for r in whole.itertuples():
        arg = r.arg_name if isinstance(r.arg_name, str) else None
        key = (int(r.step), r.module, r.io, int(r.idx), arg)
        assert key not in out, f"two stitched tensors for {key}"
        out[key] = int(r.tensor_id)
    return out


def _check(ws, run: str, fx: dict, expect_key) -> None:
    """Every truth tensor is stitched, equal to the truth, and nothing else was stitched."""
    got = _stitched(ws, run)
    seen = set()
    for tk, truth in fx["truth"].items():
        key = expect_key(tk, fx["entries"][tk])
        assert key in got, f"{tk} -> {key} not stitched"
        seen.add(key)
        t = query.load_tensor(ws, got[key])
        kind = fx["entries"][tk]["sharding"]
        if kind in ("q_rows", "kv_rows"):
            # SGLang's q_norm/k_norm work on [tokens*heads, head_dim]: read as [tokens, heads, D]
            assert t.dim() == 3 and t.shape[-1] == truth.shape[-1], (tk, list(t.shape))
            t = t.reshape(truth.shape)
        assert t.shape == truth.shape and t.dtype == truth.dtype, (tk, t.shape, truth.shape)
        if kind in SUMS and fx["tp"] > 1:
            diff = float((t.double() - truth.double()).abs().max())
            assert diff < 1e-5, (tk, diff)
        else:
            assert torch.equal(t, truth), tk
    assert set(got) == seen, sorted(set(got) - seen)[:5]


def _check_report(ws, run: str) -> None:
    rep = query.stitch_report(ws, run)
    assert len(rep) > 0
    bad = rep[~rep.verdict.isin(["verified", "assumed"])]
    assert bad.empty, bad[["module", "io", "idx", "verdict", "detail"]].to_string()
    errors = query.ingest_errors(ws, run)
    assert errors.empty, errors[["kind", "message"]].to_string()


def _hook_key(tk: tuple, _entry: dict) -> tuple:
    step, module = tk[0], tk[1]
    return (step, module, "output", tk[2] if len(tk) == 3 else 0, None)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_hook_dump_stitches_to_truth(tp: int, tmp_path: Path, workspace) -> None:
    fx = write_hook_dump(tmp_path / "sg", tp=tp, passes=2)
    run = ingest_dump(workspace, fx["dump_dir"])
    info = query.run_info(workspace, run)
    assert (info["format"], int(info["tp_size"]), info["root"]) == (
        "sglang_hook", tp, str(fx["dump_dir"]),
    )  # fmt: skip
    ranks = query.ranks(workspace, run)
    assert ranks["rank"].tolist() == list(range(tp))
    assert ranks["folder"].tolist() == [f"TP{r}_PP0_Rank{r}_pid{4242 + r}" for r in range(tp)]
    assert ranks["pid"].tolist() == [4242 + r for r in range(tp)]
    assert query.steps(workspace, run) == [0, 1]
    _check(workspace, run, fx, _hook_key)
    _check_report(workspace, run)
    before = len(query.find_tensors(workspace, run, stitched=False))
    assert ingest_dump(workspace, fx["dump_dir"] / "TP0_PP0_Rank0_pid4242") == run  # resumes
    assert len(query.find_tensors(workspace, run, stitched=False)) == before  # nothing twice
    _check(workspace, run, fx, _hook_key)
    rep = query.stitch_report(workspace, run).set_index(["step", "module", "idx"])
    if tp > 1:  # o_proj is a partial sum; its parent self_attn is not hooked (not a leaf)
        row = rep.loc[(0, "model.layers.0.self_attn.o_proj", 0)]
        assert (row.rule, row.verdict) == ("partial_sum", "assumed")
        qkv = rep.loc[(1, "model.layers.1.self_attn.qkv_proj", 0)]
        assert (qkv.rule, qkv.verdict) == ("qkv", "verified")


def _dumper_key(tk: tuple, entry: dict) -> tuple:
    step, module = tk[0], tk[1]
    name = entry["name"]
    if name in CORE:  # core fields carry their own name; inside a layer the layer_id tag
        mod = name if entry["layer_id"] is None else f"model.layers.{entry['layer_id']}.{name}"
        return (step, mod, "output", 0, None)
    arg = "next_token_logits" if name.endswith(".next_token_logits") else None
    return (step, module or "root", "output", tk[2] if len(tk) == 3 else 0, arg)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_dumper_records_stitch_to_truth(tp: int, tmp_path: Path, workspace) -> None:
    fx = write_dumper_dump(tmp_path / "sg", tp=tp, steps=2)
    # DUMPER_DIR itself: the exp_name folder inside is found
    run = ingest_dump(workspace, fx["root"] / "dumper")
    info = query.run_info(workspace, run)
    assert (info["format"], int(info["tp_size"]), info["root"]) == (
        "sglang_dumper", tp, str(fx["dump_dir"]),
    )  # fmt: skip
    ranks = query.ranks(workspace, run)
    assert ranks["rank"].tolist() == list(range(tp))
    assert ranks["folder"].tolist() == [f"rank{r}" for r in range(tp)]
    assert query.steps(workspace, run) == [0, 1]
    _check(workspace, run, fx, _dumper_key)
    _check_report(workspace, run)
    if tp > 1:
        rep = query.stitch_report(workspace, run).set_index(["step", "module", "idx"])
        # o_proj's sum equals self_attn's; the experts' sum equals the MoE block's output
        for module in ("model.layers.0.self_attn.o_proj", "model.layers.1.mlp.experts"):
            row = rep.loc[(1, module, 0)]
            assert (row.rule, row.verdict) == ("partial_sum", "verified"), (module, row.detail)
        row = rep.loc[(0, "model.layers.0.self_attn", 0)]
        assert (row.rule, row.verdict) == ("partial_sum", "assumed")


def test_detect_from_inner_folders(tmp_path: Path) -> None:
    fx = write_hook_dump(tmp_path / "h", tp=2, passes=1)
    rank1 = fx["dump_dir"] / "TP1_PP0_Rank1_pid4243"
    layout = detect(rank1)
    assert (layout.format, layout.root, layout.tp_size) == ("sglang_hook", fx["dump_dir"], 2)
    assert layout.model_config is not None and layout.model_config["num_key_value_heads"] == 2
    fd = write_dumper_dump(tmp_path / "d", tp=2, steps=1)
    layout = detect(fd["dump_dir"])
    assert (layout.format, layout.root, layout.tp_size) == ("sglang_dumper", fd["dump_dir"], 2)
    assert layout.ranks == {"rank0": 0, "rank1": 1}


def test_bad_sglang_files_are_reported(tmp_path: Path, workspace) -> None:
    """An unsafe pickle, an entry that cannot belong to a pass, a record that is no tensor."""
    from fractions import Fraction

    fx = write_hook_dump(tmp_path / "h", tp=2, passes=2)
    rank1 = fx["dump_dir"] / "TP1_PP0_Rank1_pid4243"
    torch.save({"model.embed_tokens": Fraction(1, 2)}, rank1 / "Pass00001.pt")
    p0 = rank1 / "Pass00000.pt"
    d = torch.load(p0, weights_only=True)
    d["logits_processor"] = torch.zeros(1, 4)  # SGLang saves it with the NEXT pass
    torch.save(d, p0)
    run = ingest_dump(workspace, fx["dump_dir"])
    errors = query.ingest_errors(workspace, run)
    unsafe = errors[errors.kind == "unreadable"]
    assert unsafe.path.tolist() == [str(rank1 / "Pass00001.pt")]
    assert "refused unsafe pickle" in unsafe.message.iloc[0]
    assert "fractions.Fraction" in unsafe.message.iloc[0]
    skipped = errors[errors.kind == "skipped"]
    assert skipped.path.tolist() == [str(p0)] and "logits_processor" in skipped.message.iloc[0]
    # what Pass00000 holds is whole and right; what Pass00001 holds lacks rank 1 and says so
    got = _stitched(workspace, run)
    in_file1 = set()
    for tk, truth in fx["truth"].items():
        e = fx["entries"][tk]
        if e["file_pass"] == 1:
            in_file1.add(_hook_key(tk, e)[:4])
        elif e["sharding"] not in ("q_rows", "kv_rows", *SUMS):
            assert torch.equal(query.load_tensor(workspace, got[_hook_key(tk, e)]), truth), tk
    rep = query.stitch_report(workspace, run)
    failed = rep[rep.verdict == "failed"]
    assert set(failed.rule) == {"missing_rank"}
    assert {(int(r.step), r.module, r.io, int(r.idx)) for r in failed.itertuples()} == in_file1

    fd = write_dumper_dump(tmp_path / "d", tp=1, steps=1)
    bad = next(p for p in fd["files"] if "name=seq_lens" in p.name)
    torch.save({"value": [1, 2], "meta": {}}, bad)
    run = ingest_dump(workspace, fd["dump_dir"])
    errors = query.ingest_errors(workspace, run)
    assert errors.kind.tolist() == ["not_tensor"] and errors.path.tolist() == [str(bad)]
    assert "holds a list, not a tensor" in errors.message.iloc[0]


def test_pipeline_parallel_is_refused(tmp_path: Path) -> None:
    from studio_backend.errors import InputError

    fx = write_hook_dump(tmp_path / "h", tp=1, passes=1)
    src = fx["dump_dir"] / "TP0_PP0_Rank0_pid4242"
    src.rename(fx["dump_dir"] / "TP0_PP1_Rank1_pid4242")
    with pytest.raises(InputError, match="pipeline-parallel"):
        detect(fx["dump_dir"])


def test_member_addresses_round_trip(tmp_path: Path) -> None:
    from studio_backend.dumps.formats.common import Member, load_source, source_path, split_source

    folder = tmp_path / "odd #member= name"
    folder.mkdir()
    f = folder / "Pass00000.pt"
    t = torch.arange(12.0)
    torch.save({"a.b": [None, t]}, f)
    addr = Member("a.b", (1,), (3, 4)).address(f)
    assert split_source(addr) == (f, Member("a.b", (1,), (3, 4)))
    assert source_path(addr) == f
    assert torch.equal(load_source(addr), t.reshape(3, 4))
    plain = folder / "x.pt"
    torch.save(t, plain)
    assert split_source(str(plain)) == (plain, None)
    assert torch.equal(load_source(plain), t)


@pytest.mark.parametrize("writer", [write_hook_dump, write_dumper_dump])
def test_watch_while_sglang_writes(writer, tmp_path: Path, workspace) -> None:
    """Files appear one by one (rank folders first, as SGLang makes them at start-up)."""
    import shutil
    import threading
    import time

    from studio_backend.dumps.watch import DumpWatcher

    fx = writer(tmp_path / "staged", tp=2)
    live = tmp_path / "live"
    shutil.copy(fx["config_path"], live.parent / "config.json")
    files = [p.relative_to(fx["dump_dir"]) for p in fx["files"]]
    for rel in files:
        (live / rel).parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        for rel in files:
            data = (fx["dump_dir"] / rel).read_bytes()
            tmp = live / rel.parent / ("." + rel.name + ".part")
            tmp.write_bytes(data)
            tmp.rename(live / rel)
            time.sleep(0.002)

    w = DumpWatcher(workspace, live, stable_s=0.05, poll_s=0.02).start()
    t = threading.Thread(target=write)
    t.start()
    t.join()
    time.sleep(0.3)
    w.stop(finish=True)
    assert w.error is None
    fx["dump_dir"] = live
    _check(workspace, w.run_id, fx, _hook_key if writer is write_hook_dump else _dumper_key)
    _check_report(workspace, w.run_id)


def test_o_proj_partial_sum_only_for_models_that_build_it(tmp_path: Path, workspace) -> None:
    """Another architecture's o_proj is not summed: ranks that differ are flagged, not added."""
    import json

    fx = write_hook_dump(tmp_path / "h", tp=2, passes=1)
    cfg = json.loads(fx["config_path"].read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]  # llama.py: o_proj reduce_results is a parameter
    fx["config_path"].write_text(json.dumps(cfg))
    run = ingest_dump(workspace, fx["dump_dir"])
    rep = query.stitch_report(workspace, run).set_index(["step", "module", "idx"])
    row = rep.loc[(0, "model.layers.0.self_attn.o_proj", 0)]
    assert (row.module_class, row.rule, row.verdict) == (
        "RowParallelLinear",
        "replicated",
        "failed",
    )


def test_dp_attention_is_refused(tmp_path: Path) -> None:
    from studio_backend.errors import InputError

    fd = write_dumper_dump(tmp_path / "d", tp=2, steps=1)
    for f in fd["files"]:
        rec = torch.load(f, weights_only=True)
        rec["meta"]["sglang_parallel_info"]["attn_tp_size"] = 1
        torch.save(rec, f)
    with pytest.raises(InputError, match="DP attention"):
        detect(fd["dump_dir"])


def test_dumper_names(tmp_path: Path) -> None:
    """Record names as dumper.py forms them (``_format_tags``; ``_NonIntrusiveDumper``)."""
    from studio_backend.dumps.formats.sglang_dumper import DumperReader, module_of

    ni = "non_intrusive__model.layers.1.self_attn"
    assert module_of(ni + ".inputs.hidden_states", {}) == (
        "model.layers.1.self_attn", "input", -1, "hidden_states",
    )  # fmt: skip
    assert module_of(ni + ".inputs.0", {}) == ("model.layers.1.self_attn", "input", 0, None)
    assert module_of("non_intrusive__model.layers.1.mlp.experts.inputs.1.2", {}) == (
        "model.layers.1.mlp.experts", "input", 1, "2",
    )  # fmt: skip
    assert module_of("non_intrusive__output.next_token_logits", {}) == (
        "root", "output", 0, "next_token_logits",
    )  # fmt: skip
    rope = "non_intrusive__model.layers.0.self_attn.rotary_emb.output.1"
    assert module_of(rope, {"layer_id": "3"}) == (
        "model.layers.3.self_attn.rotary_emb", "output", 1, None,
    )  # fmt: skip
    assert module_of("attn_out", {"layer_id": "2", "phase": "decode"}) == (
        "model.layers.2.attn_out[phase=decode]", "output", 0, None,
    )  # fmt: skip
    # one name dumped twice in a step: calls numbered by dump_index, not by file order
    names = ["step=0___rank=0___dump_index=9___name=h___recompute_status=disabled.pt",
             "step=0___rank=0___dump_index=5___name=h___recompute_status=disabled.pt",
             "step=0___rank=0___dump_index=7___name=h___recompute_status=disabled___layer_id=2.pt"]  # fmt: skip
    for n in names:
        torch.save({"value": torch.zeros(2), "meta": {}}, tmp_path / n)
    reader = DumperReader(tmp_path)
    got = [(r.module, r.call_index) for n in names for r in reader.refs(tmp_path / n)]
    assert got == [("h", 1), ("h", 0), ("model.layers.2.h", 0)]
