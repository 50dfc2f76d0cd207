"""Small hand-built profiles in the documented structures (Kineto GPU trace, torch_npu
ASCEND_PROFILER_OUTPUT, nsys SQLite export), with the attribution each must produce."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

HOST = 4242  # host pid == tid (main thread), as Kineto writes it


def _meta() -> list[dict]:
    return [
        {"ph": "M", "name": "process_name", "pid": HOST, "tid": 0, "args": {"name": "python"}},
        {"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": "python"}},
        {"ph": "M", "name": "thread_name", "pid": 0, "tid": 7, "args": {"name": "stream 7"}},
    ]


class _Builder:
    def __init__(self) -> None:
        self.events: list[dict] = _meta()
        self.ext = 100
        self.corr = 500

    def ann(self, name: str, ts: float, dur: float) -> None:
        self.events.append({"ph": "X", "cat": "user_annotation", "name": name, "pid": HOST,
                            "tid": HOST, "ts": ts, "dur": dur,
                            "args": {"External id": self._ext(), "Record function id": 0}})  # fmt: skip

    def _ext(self) -> int:
        self.ext += 1
        return self.ext

    def op_with_kernel(self, op: str, kernel: str, ts: float, kdur: float) -> None:
        """cpu_op [ts, ts+20] -> cudaLaunchKernel [ts+5, ts+10] -> kernel at ts+100 (+ac2g)."""
        ext = self._ext()
        self.corr += 1
        c = self.corr
        self.events += [
            {"ph": "X", "cat": "cpu_op", "name": op, "pid": HOST, "tid": HOST, "ts": ts,
             "dur": 20.0, "args": {"External id": ext, "Sequence number": ext,
                                   "Input Dims": [[1, 7, 16], [48, 16]]}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": HOST,
             "tid": HOST, "ts": ts + 5, "dur": 5.0,
             "args": {"External id": ext, "cbid": 211, "correlation": c}},
            {"ph": "X", "cat": "kernel", "name": kernel, "pid": 0, "tid": 7, "ts": ts + 100,
             "dur": kdur, "args": {"External id": ext, "queued": 0, "device": 0, "context": 1,
                                   "stream": 7, "correlation": c, "registers per thread": 32,
                                   "shared memory": 0, "grid": [4, 1, 1], "block": [128, 1, 1],
                                   "est. achieved occupancy %": 50}},
            {"ph": "s", "id": c, "pid": HOST, "tid": HOST, "ts": ts + 5, "cat": "ac2g",
             "name": "ac2g"},
            {"ph": "f", "id": c, "pid": 0, "tid": 7, "ts": ts + 100, "cat": "ac2g",
             "name": "ac2g", "bp": "e"},
        ]  # fmt: skip

    def graph_replay(self, ts: float, kernels: list[tuple[str, float]]) -> None:
        """One cudaGraphLaunch whose kernels all carry its correlation id."""
        ext = self._ext()
        self.corr += 1
        c = self.corr
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch",
                            "pid": HOST, "tid": HOST, "ts": ts, "dur": 8.0,
                            "args": {"External id": ext, "cbid": 311, "correlation": c}})  # fmt: skip
        for i, (name, dur) in enumerate(kernels):
            self.events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7,
                                "ts": ts + 100 + 30 * i, "dur": dur,
                                "args": {"device": 0, "stream": 7, "correlation": c,
                                         "External id": ext}})  # fmt: skip


# (kernel, op, module, layer, dur_us) for the attributed kernels of the GPU fixture.
GPU_EXPECTED = [
    ("sm90_xmma_gemm_bf16bf16_bf16f32", "aten::addmm", "model.layers.0.self_attn.qkv_proj", 0, 12.5),
    ("rotary_embedding_kernel", "_C::rotary_embedding", "model.layers.0.self_attn.rotary_emb", 0, 3.25),
    ("paged_attention_v2_kernel", "vllm::unified_attention", "model.layers.0.self_attn.attn", 0, 40.0),
    ("paged_attention_v2_reduce_kernel", "vllm::unified_attention", "model.layers.0.self_attn.attn", 0, 6.0),
    ("fused_add_rms_norm_kernel", "_C::fused_add_rms_norm", "model.layers.1.input_layernorm", 1, 4.5),
    ("silu_and_mul_kernel", "_C::silu_and_mul", "model.layers.1.mlp.act_fn", 1, 2.75),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "c10d::allreduce_", "model.layers.1.mlp.down_proj", 1, 9.0),
]  # fmt: skip
GRAPH_KERNELS = [("sm90_xmma_gemm_bf16bf16_bf16f32", 11.0), ("paged_attention_v2_kernel", 30.0),
                 ("fused_add_rms_norm_kernel", 4.0)]  # fmt: skip
ORPHAN = ("triton_poi_fused_add_0", 1.5)  # a kernel whose launch fell outside the window


def write_kineto_gpu(path: Path) -> Path:
    """A Kineto trace in torch.profiler's structure with CPU ops, launches, kernels, ac2g flows,
    a CUDA-graph replay and a kernel without its launch."""
    b = _Builder()
    b.ann("ProfilerStep#3", 0.0, 5000.0)
    b.ann("model.layers.0.self_attn.qkv_proj", 1000.0, 50.0)
    b.op_with_kernel("aten::addmm", GPU_EXPECTED[0][0], 1010.0, 12.5)
    b.ann("model.layers.0.self_attn.rotary_emb", 1100.0, 40.0)
    b.op_with_kernel("_C::rotary_embedding", GPU_EXPECTED[1][0], 1105.0, 3.25)
    b.ann("model.layers.0.self_attn.attn", 1200.0, 60.0)
    b.op_with_kernel("vllm::unified_attention", GPU_EXPECTED[2][0], 1205.0, 40.0)
    # the reduce kernel is launched by the same op: a second launch inside it
    b.events.append({"ph": "X", "cat": "cpu_op", "name": "vllm::unified_attention", "pid": HOST,
                     "tid": HOST, "ts": 1230.0, "dur": 20.0,
                     "args": {"External id": 900, "Input Dims": [[1, 7, 16]]}})  # fmt: skip
    b.corr += 1
    b.events += [
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": HOST, "tid": HOST,
         "ts": 1235.0, "dur": 4.0, "args": {"External id": 900, "correlation": b.corr}},
        {"ph": "X", "cat": "kernel", "name": GPU_EXPECTED[3][0], "pid": 0, "tid": 7, "ts": 1400.0,
         "dur": 6.0, "args": {"External id": 900, "correlation": b.corr, "stream": 7, "device": 0}},
    ]  # fmt: skip
    b.ann("model.layers.1.input_layernorm", 2000.0, 40.0)
    b.op_with_kernel("_C::fused_add_rms_norm", GPU_EXPECTED[4][0], 2005.0, 4.5)
    b.ann("model.layers.1.mlp", 2100.0, 300.0)
    b.ann("model.layers.1.mlp.act_fn", 2110.0, 40.0)
    b.op_with_kernel("_C::silu_and_mul", GPU_EXPECTED[5][0], 2115.0, 2.75)
    b.ann("model.layers.1.mlp.down_proj", 2200.0, 100.0)
    b.op_with_kernel("c10d::allreduce_", GPU_EXPECTED[6][0], 2210.0, 9.0)
    b.graph_replay(3000.0, GRAPH_KERNELS)
    b.events.append({"ph": "X", "cat": "kernel", "name": ORPHAN[0], "pid": 0, "tid": 7,
                     "ts": 4000.0, "dur": ORPHAN[1],
                     "args": {"device": 0, "stream": 7, "correlation": 999}})  # fmt: skip
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100"}],
           "traceEvents": b.events, "traceName": str(path), "displayTimeUnit": "ms"}  # fmt: skip
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# kernel_details.csv rows: (name, type, core, start_us, dur_us, input shapes)
NPU_KERNELS = [
    ("aclnnMatmul_MatMulV3", "MatMulV3", "AI_CORE", "1700000000001100.000", "21.32", "\"1,7,2048;2048,6144\""),
    ("aclnnRmsNorm_RmsNorm", "RmsNorm", "AI_VECTOR_CORE", "1700000000001200.500", "3.84", "\"1,7,2048;2048\""),
    ("aclnnIncreFlashAttention_IFA", "IncreFlashAttentionV4", "AI_CORE", "1700000000001300.250", "55.10", "\"1,7,2048\""),
    ("hcom_allReduce__512_0_1", "hcom_allReduce_", "COMMUNICATION", "1700000000001400.000", "30.00", "\"\""),
]  # fmt: skip
NPU_EXPECTED_MODULES = {
    "aclnnMatmul_MatMulV3": ("model.layers.0.self_attn.qkv_proj", 0),
    "aclnnRmsNorm_RmsNorm": ("model.layers.0.post_attention_layernorm", 0),
    "aclnnIncreFlashAttention_IFA": ("model.layers.0.self_attn.attn", 0),
    "hcom_allReduce__512_0_1": (None, None),  # no torch_to_npu flow: unattributed
}


def write_torch_npu(root: Path) -> Path:
    """``rank0_..._ascend_pt/ASCEND_PROFILER_OUTPUT`` with kernel_details.csv, op_statistic.csv
    and trace_view.json (host ops, module annotations, torch_to_npu flows)."""
    out = root / "localhost_1234_20261123_ascend_pt" / "ASCEND_PROFILER_OUTPUT"
    out.mkdir(parents=True)
    header = ("Step Id,Device_id,Model ID,Task ID,Stream ID,Name,Type,OP State,Accelerator Core,"
              "Start Time(us),Duration(us),Wait Time(us),Block Dim,Mix Block Dim,Input Shapes,"
              "Input Data Types,Input Formats,Output Shapes,Output Data Types,Output Formats")  # fmt: skip
    lines = [header]
    for i, (name, typ, core, start, dur, shapes) in enumerate(NPU_KERNELS):
        lines.append(f"3,0,4294967295,{10 + i},2,{name},{typ},dynamic,{core},{start}\t,{dur},0.0,"
                     f"24,0,{shapes},DT_BF16,ND,\"1,7,2048\",DT_BF16,ND")  # fmt: skip
    (out / "kernel_details.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "op_statistic.csv").write_text(
        "Device_id,OP Type,Core Type,Count,Total Time(us),Min Time(us),Avg Time(us),"
        "Max Time(us),Ratio(%)\n0,MatMulV3,AI_CORE,1,21.32,21.32,21.32,21.32,19.2\n",
        encoding="utf-8",
    )
    host = {"pid": 1234, "tid": 1234}
    ev: list[dict] = [{"ph": "M", "name": "process_name", "pid": 1234, "tid": 0,
                       "args": {"name": "Python"}}]  # fmt: skip
    anns = [("model.layers.0.self_attn.qkv_proj", "1700000000001000.000", "30.0",
             "aten::linear", 0), ("model.layers.0.post_attention_layernorm",
             "1700000000001050.000", "30.0", "npu::npu_rms_norm", 1),
            ("model.layers.0.self_attn.attn", "1700000000001090.000", "30.0",
             "npu::npu_incre_flash_attention", 2)]  # fmt: skip
    for i, (ann, ts, dur, op, k) in enumerate(anns):
        ev.append({"ph": "X", "cat": "user_annotation", "name": ann, "ts": ts, "dur": dur,
                   **host, "args": {}})  # fmt: skip
        op_ts = f"{float(ts) + 2:.3f}"
        ev.append({"ph": "X", "cat": "cpu_op", "name": op, "ts": op_ts, "dur": "20.0", **host,
                   "args": {"Sequence number": i, "Input Dims": [[1, 7, 2048]]}})  # fmt: skip
        ev.append({"ph": "s", "bp": "e", "name": "torch_to_npu", "id": 7000 + i, **host,
                   "ts": op_ts, "cat": "async_npu"})  # fmt: skip
        ev.append({"ph": "f", "bp": "e", "name": "torch_to_npu", "id": 7000 + i, "pid": 99,
                   "tid": 2, "ts": NPU_KERNELS[k][3], "cat": "async_npu"})  # fmt: skip
        # the device row trace_view also holds (kernel_details.csv is the one counted)
        ev.append({"ph": "X", "name": NPU_KERNELS[k][0], "pid": 99, "tid": 2,
                   "ts": NPU_KERNELS[k][3], "dur": NPU_KERNELS[k][4],
                   "args": {"Task Type": "AI_CORE"}})  # fmt: skip
    (out / "trace_view.json").write_text(json.dumps(ev), encoding="utf-8")
    return out.parent


NSYS_KERNELS = [  # (name, start_ns, end_ns, correlation)
    ("ampere_bf16_s16816gemm_bf16_128x64", 10_000, 22_000, 11),
    ("paged_attention_v2_kernel", 30_000, 70_000, 12),
    ("rms_norm_kernel", 80_000, 84_500, 13),
]
NSYS_EXPECTED = {
    "ampere_bf16_s16816gemm_bf16_128x64": ("model.layers.0.self_attn.qkv_proj", 0),
    "paged_attention_v2_kernel": ("model.layers.0.self_attn.attn", 0),
    "rms_norm_kernel": ("model.layers.1.input_layernorm", 1),
}


def write_nsys(path: Path) -> Path:
    """An nsys SQLite export with the documented tables (subset of their columns)."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL,
            deviceId INT NOT NULL, contextId INT NOT NULL, streamId INT NOT NULL,
            correlationId INT, globalPid INT, demangledName INT NOT NULL, shortName INT NOT NULL,
            gridX INT, gridY INT, gridZ INT, blockX INT, blockY INT, blockZ INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT NOT NULL, end INT NOT NULL,
            eventClass INT NOT NULL, globalTid INT, correlationId INT, nameId INT NOT NULL,
            returnValue INT NOT NULL, callchainId INT);
        CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL,
            rangeId INT, category INT, color INT, text TEXT, globalTid INT, endGlobalTid INT,
            textId INT, domainId INT);
        """
    )
    gtid = (77 << 24) | 77
    strings = {1: "cudaLaunchKernel_v7000"}
    con.execute("INSERT INTO StringIds VALUES (1, 'cudaLaunchKernel_v7000')")
    ranges = [("model.layers.0.self_attn.qkv_proj", 1_000, 3_000),
              ("model.layers.0.self_attn.attn", 4_000, 6_000),
              ("model.layers.1.input_layernorm", 7_000, 9_000)]  # fmt: skip
    for i, (text, start, end) in enumerate(ranges):
        sid = 100 + i
        con.execute("INSERT INTO StringIds VALUES (?, ?)", (sid, text))
        # the first range carries its text inline, the others through StringIds (both occur)
        con.execute(
            "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId) "
            "VALUES (?, ?, 59, ?, ?, ?)",
            (start, end, text if i == 0 else None, gtid, None if i == 0 else sid),
        )
    for i, (name, start, end, corr) in enumerate(NSYS_KERNELS):
        sid = 200 + i
        con.execute("INSERT INTO StringIds VALUES (?, ?)", (sid, name))
        con.execute(
            "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, 0, 1, 7, ?, 77, ?, ?, 4, 1, 1,"
            " 128, 1, 1)",
            (start, end, corr, sid, sid),
        )
        launch = ranges[i][1] + 500
        con.execute(
            "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?, ?, 0, ?, ?, 1, 0, 0)",
            (launch, launch + 300, gtid, corr),
        )
    del strings
    con.commit()
    con.close()
    return path
