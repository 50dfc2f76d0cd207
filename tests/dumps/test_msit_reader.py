"""msit_llm reader details: file names, api-mode folders, model_tree.json, statistics.csv mode."""

from __future__ import annotations

from pathlib import Path

from studio_backend.dumps.detect import detect
from studio_backend.dumps.formats import msit
from studio_backend.dumps.ingest import ingest_dump

TREE = {
    "name": "root", "type": "Qwen3MoeForCausalLM", "children": [
        {"name": "root.model", "type": "Qwen3MoeModel", "children": [
            {"name": "root.model.layers.1", "type": "Qwen3MoeDecoderLayer", "children": [
                {"name": "root.model.layers.1.mlp", "type": "Qwen3MoeSparseMoeBlock", "children": [
                    {"name": "root.model.layers.1.mlp.experts", "type": "FusedMoE", "children": []}]}]}]}],
}  # fmt: skip


def test_file_names_and_api_folders(tmp_path: Path) -> None:
    classes = msit.model_tree_classes(TREE)
    assert (
        classes["model.layers.1.mlp.experts"] == "FusedMoE"
        and classes["root"] == "Qwen3MoeForCausalLM"
    )
    base = tmp_path / "torch_tensors" / "npu0_7" / "3"
    ref = msit.parse_file(
        base / "root.model.layers.1.mlp.experts.npu_kronecker_quant" / "input_2.pth", classes
    )
    assert (ref.module, ref.kind, ref.io, ref.idx, ref.step) == (
        "model.layers.1.mlp.experts.npu_kronecker_quant", "api", "input", 2, 3,
    )  # fmt: skip
    nested = msit.parse_file(base / "root.model.layers.1" / "output_0_1.pth", classes)
    assert (nested.module, nested.kind, nested.io, nested.idx, nested.arg_name) == (
        "model.layers.1", "module", "output", 0, "0_1",
    )  # fmt: skip
    assert msit.parse_file(base / "root.model.layers.1" / "notes.txt", classes) is None


def test_statistics_csv_mode(tmp_path: Path, workspace) -> None:
    header = "NodeName,NodeType,InputOutput,Index,DataType,Shape,Max,Min,Mean,L2Norm\n"
    for r in range(2):
        d = (
            tmp_path
            / "dump"
            / "msit_dump_20261123_000000"
            / "torch_tensors"
            / f"npu{r}_10{r}"
            / "0"
        )
        m = d / "root.model.layers.0.self_attn.o_proj"
        m.mkdir(parents=True)
        (m / "statistics.csv").write_text(
            header
            + f"root.model.layers.0.self_attn.o_proj,RowParallelLinear,Output,0,torch.bfloat16,"
            f'"(8, 64)",{3.5 + r},-2.0,0.01,12.25\n'
        )
    layout = detect(tmp_path / "dump")
    assert layout.tp_size == 2
    run = ingest_dump(workspace, tmp_path / "dump")
    rows = (
        workspace.cursor()
        .execute(
            "SELECT rank, step, module, module_class, io, idx, dtype, shape, max, min, mean, l2 "
            "FROM dump_tool_stats WHERE run_id = ? ORDER BY rank",
            [run],
        )
        .fetchall()
    )
    assert rows == [
        (r, 0, "model.layers.0.self_attn.o_proj", "RowParallelLinear", "output", 0, "torch.bfloat16", "(8, 64)",
         3.5 + r, -2.0, 0.01, 12.25)
        for r in range(2)
    ]  # fmt: skip
