"""``studio experts`` (import + show expert load) and ``studio inspect-checkpoint``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from studio_backend.errors import InputError
from studio_backend.workspace import Workspace, open_workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experts",
        help="import expert load (SGLang/vLLM .pt, MindIE folder, a dump folder, dump:RUN_ID) or"
        " show a stored source: per (step, layer, expert) counts and per-layer balance metrics",
    )
    p.add_argument(
        "source",
        help="a stored source name, a recorder file/folder, a dump folder (routed from its"
        " router logits; ingested first if needed) or dump:RUN_ID",
    )
    p.add_argument("--name", help="name for the imported source (default: the file name)")
    p.add_argument("--devices", type=int, help="number of EP devices (default from the source)")
    p.add_argument("--expert-map", help="expert map JSON giving the physical placement")
    p.add_argument("--top-k", type=int, help="experts per token (dumps without it in config)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_experts)

    c = sub.add_parser(
        "inspect-checkpoint",
        help="MoE/dense layers, missing/unexpected weights, parameter counts, TP/EP partition plan",
    )
    c.add_argument("dir", help="checkpoint directory (config.json + *.safetensors)")
    c.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    c.add_argument("--ep", type=int, default=1, help="expert-parallel size (default 1)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_inspect)


def import_source(
    ws: Workspace,
    source: str,
    *,
    name: str | None = None,
    devices: int | None = None,
    expert_map: str | None = None,
    top_k: int | None = None,
) -> list[str]:
    """Import a path or dump run; returns the stored source names (MindIE: one per phase).

    A dump folder (msit, msprobe, SGLang; or any folder inside one), like ``studio stats`` and
    ``studio stitch`` take, is ingested (or found, if it already is) and its router logits
    routed, exactly as ``dump:RUN_ID``; the source is named ``dump-<run id>``, and an existing
    source of that name is reused.
    """
    from studio_backend.moe import store  # pandas: imported only when run

    if source.startswith("dump:"):
        return [_from_dump(ws, source[5:], name, devices, top_k)]
    from studio_backend.moe.detect import read_source

    path = Path(source).expanduser()
    if path.is_dir() and _is_dump(path):
        return [_from_dump(ws, _ingest(ws, path), name, devices, top_k)]
    try:
        loads = read_source(source, num_devices=devices, expert_map_path=expert_map)
    except InputError as exc:
        if not path.is_dir():
            raise
        try:  # a dump format detect() knows beyond msit / msprobe
            run_id = _ingest(ws, path)
        except InputError:
            raise InputError(
                path,
                "neither a dump (msit torch_tensors/, msprobe step<N>/, SGLang TP*_PP*_Rank*"
                " folders or dumper records) nor an expert-load"
                f" recording (SGLang recorder .pt files, MindIE CSV folder): {exc.problem}",
            ) from exc
        return [_from_dump(ws, run_id, name, devices, top_k)]
    base = name or Path(source).expanduser().resolve().name
    names = []
    for load in loads:
        suffix = "/" + load.kind.split("-", 1)[1] if len(loads) > 1 else ""
        names.append(store.save(ws, load, base + suffix))
    return names


def _is_dump(path: Path) -> bool:
    from studio_backend.dumps.formats import msit, msprobe, sglang_dumper, sglang_hook

    return (
        msit.is_msit(path) or msprobe.is_msprobe(path) or sglang_hook.is_sglang_hook(path)
        or sglang_dumper.is_sglang_dumper(path)
    )  # fmt: skip


def _ingest(ws: Workspace, path: Path) -> str:
    """The dump's run id, ingesting it first if needed (stitch only: statistics are not needed
    for routing; `studio stats` or the Dumps page add them)."""
    from studio_backend.dumps.ingest import ingest_dump

    return ingest_dump(ws, path, with_stats=False)


def _from_dump(
    ws: Workspace, run_id: str, name: str | None, devices: int | None, top_k: int | None
) -> str:
    from studio_backend.moe import store  # pandas: imported only when run
    from studio_backend.moe.from_dump import load_from_dump

    name = name or f"dump-{run_id}"
    if name in set(store.sources(ws)["source"]):
        info = store.source_info(ws, name)
        meta = info.get("meta")
        meta = json.loads(meta) if isinstance(meta, str) and meta else (meta or {})
        if info["kind"] == "dump" and meta.get("run_id") == run_id:
            return name  # this dump was routed before: show it
    load = load_from_dump(ws, run_id, top_k=top_k, num_devices=devices)
    return store.save(ws, load, name)


def describe(ws: Workspace, name: str, with_counts: bool = True) -> dict[str, Any]:
    from studio_backend.moe import metrics, store  # pandas: imported only when run

    info = store.source_info(ws, name)
    agg = store.aggregate(ws, name)
    out: dict[str, Any] = {
        "source": name,
        "kind": info["kind"],
        "path": info["path"],
        "num_experts": int(info["num_experts"]),
        "num_devices": int(info["num_devices"]),
        "top_k": None
        if info["top_k"] is None or info["top_k"] != info["top_k"]
        else int(info["top_k"]),
        "summary": {k: (None if v != v else v) for k, v in agg.summary.items()},
        "definitions": metrics.DEFINITIONS,
        "layers": json.loads(agg.table.to_json(orient="records")),
        "device_load": {
            int(layer): row.tolist() for layer, row in zip(agg.layers, agg.device_load, strict=True)
        },
    }
    if with_counts:
        out["counts"] = store.counts_by_step(ws, name).to_dict(orient="records")
    return out


def cmd_experts(args: argparse.Namespace) -> int:
    from studio_backend.moe import metrics, store  # pandas: imported only when run

    # Showing a stored source only reads: it works while the studio owns the workspace.
    ws = open_workspace(args.workspace, read_only=True)
    try:
        known = set(store.sources(ws)["source"])
        names = [args.source] if args.source in known else import_source(
            ws, args.source, name=args.name, devices=args.devices,
            expert_map=args.expert_map, top_k=args.top_k,
        )  # fmt: skip
        result = [describe(ws, n) for n in names]
    finally:
        ws.close()
    if args.json:
        print(json.dumps({"sources": result}, default=_jsonable))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for r in result:
        con.print(
            f"[bold]{r['source']}[/] ({r['kind']}, {r['num_experts']} experts, {r['num_devices']} devices)"
        )
        for k, v in r["summary"].items():
            con.print(f"  {k} = {v:.4f}   [dim]{metrics.DEFINITIONS[k]}[/]")
        t = Table("layer", "tokens", "balancedness", "max/mean", "cv", "entropy", "top-k share")
        for row in r["layers"]:
            t.add_row(*(f"{row[c]:.4g}" if row[c] is not None else "-" for c in
                        ("layer", "tokens", "balancedness", "peak_to_avg", "cv", "entropy", "topk_share")))  # fmt: skip
        con.print(t)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from studio_backend.moe.checkpoint import inspect

    report = inspect(args.dir, tp=args.tp, ep=args.ep)
    if args.json:
        print(json.dumps(report, default=_jsonable))
        return 0 if report["ok"] else 1
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{report['path']}[/]  {report['tensors']} tensors, dtypes {report['dtypes']}")
    con.print(f"MoE layers {report['moe_layers']}  dense layers {report['dense_layers']}")
    lay = report["layout"]
    files = f"{lay['files']} file" + ("s" if lay["files"] > 1 else "")
    con.print(f"layout: {lay['experts']} experts, {lay['quantization']} weights, {files}"
              + (" + index" if lay["index"] else ""))  # fmt: skip
    for key in ("missing", "unexpected"):
        for n in report[key]:
            con.print(f"[red]{key}[/] {n}")
    for w in report["wrong_shape"]:
        con.print(f"[red]wrong shape[/] {w['name']}: expected {w['expected']}, found {w['found']}")
    if report["ok"]:
        con.print("[green]all weight names and shapes as expected[/]")
    con.print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in report["params"].items()))
    con.print("stored bytes: " + ", ".join(f"{k} {v:,}" for k, v in report["bytes"].items()))
    plan = report["plan"]
    t = Table(
        "device", "tp rank", "ep rank", "experts", "GiB", title=f"tp={plan['tp']} ep={plan['ep']}"
    )
    for d in plan["per_device"]:
        t.add_row(str(d["device"]), str(d["tp_rank"]), str(d["ep_rank"]),
                  "-".join(map(str, d["experts"])) or "-", f"{d['bytes'] / 2**30:.3f}")  # fmt: skip
    con.print(t)
    return 0 if report["ok"] else 1


def _jsonable(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and o != o:
        return None
    raise InputError(repr(o), "not JSON serialisable")
