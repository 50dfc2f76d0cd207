"""Ahead-of-time compilation of the Triton kernels for a GPU target, without a GPU.

``python -m studio_kernels.compile_check`` compiles every kernel for sm90 (H100) and prints one line
per kernel with the size of its PTX and cubin. Run it in a process without TRITON_INTERPRET
(an interpreted kernel cannot be compiled).
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def _specs(group: int = 128):
    from studio_kernels import gating, repack, triton_moe

    moe_common = {"H": "i32", "INTER": "i32", "num_pairs": "i32"}
    yield (
        "gate_up",
        triton_moe._gate_up_kernel,
        {
            "x_ptr": "*bf16", "q_ptr": "*i32", "z_ptr": "*u8", "s_ptr": "*fp16",
            "pairs_ptr": "*i32", "experts_ptr": "*i32", "h_ptr": "*bf16", **moe_common,
            "TOPK": "constexpr", "GROUP": "constexpr", "BLOCK_T": "constexpr",
            "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
        },
        {"TOPK": 8, "GROUP": group, "BLOCK_T": 16, "BLOCK_N": 64, "BLOCK_K": 64},
    )  # fmt: skip
    yield (
        "gate_up_n16",  # the narrow output tile picked for small decode grids
        triton_moe._gate_up_kernel,
        {
            "x_ptr": "*bf16", "q_ptr": "*i32", "z_ptr": "*u8", "s_ptr": "*fp16",
            "pairs_ptr": "*i32", "experts_ptr": "*i32", "h_ptr": "*bf16", **moe_common,
            "TOPK": "constexpr", "GROUP": "constexpr", "BLOCK_T": "constexpr",
            "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
        },
        {"TOPK": 8, "GROUP": group, "BLOCK_T": 16, "BLOCK_N": 16, "BLOCK_K": 64},
    )  # fmt: skip
    yield (
        "gate_up_fp32",  # fp32 activations: the "ieee" dot path
        triton_moe._gate_up_kernel,
        {
            "x_ptr": "*fp32", "q_ptr": "*i32", "z_ptr": "*u8", "s_ptr": "*fp16",
            "pairs_ptr": "*i32", "experts_ptr": "*i32", "h_ptr": "*fp32", **moe_common,
            "TOPK": "constexpr", "GROUP": "constexpr", "BLOCK_T": "constexpr",
            "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
        },
        {"TOPK": 8, "GROUP": group, "BLOCK_T": 16, "BLOCK_N": 64, "BLOCK_K": 64},
    )  # fmt: skip
    yield (
        "down",
        triton_moe._down_kernel,
        {
            "h_ptr": "*bf16", "q_ptr": "*i32", "z_ptr": "*u8", "s_ptr": "*fp16",
            "pairs_ptr": "*i32", "experts_ptr": "*i32", "w_ptr": "*fp32", "out_ptr": "*fp32",
            **moe_common, "GROUP": "constexpr", "BLOCK_T": "constexpr",
            "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
        },
        {"GROUP": group, "BLOCK_T": 16, "BLOCK_N": 64, "BLOCK_K": 64},
    )  # fmt: skip
    yield (
        "topk_softmax",
        gating._topk_softmax_kernel,
        {
            "logits_ptr": "*fp32", "ids_ptr": "*i32", "weights_ptr": "*fp32", "E": "i32",
            "TOPK": "constexpr", "BLOCK_E": "constexpr", "RENORM": "constexpr",
        },
        {"TOPK": 8, "BLOCK_E": 128, "RENORM": True},
    )  # fmt: skip
    yield (
        "repack",
        repack._repack_kernel,
        {
            "src_ptr": "*i32", "dst_ptr": "*i32", "K": "i32", "N": "i32",
            "BLOCK_K": "constexpr", "BLOCK_N": "constexpr",
        },
        {"BLOCK_K": 32, "BLOCK_N": 32},
    )  # fmt: skip


def compile_all(arch: int = 90) -> dict[str, dict[str, int]]:
    """Compile each kernel for CUDA ``sm<arch>``; returns {kernel: {"ptx": bytes, "cubin": bytes}}."""
    target = GPUTarget("cuda", arch, 32)
    sizes = {}
    for name, fn, signature, constexprs in _specs():
        if not isinstance(fn, triton.runtime.jit.JITFunction):
            raise RuntimeError("kernels were imported under TRITON_INTERPRET: cannot compile")
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=target)
        sizes[name] = {k: len(compiled.asm[k]) for k in ("ptx", "cubin") if k in compiled.asm}
    return sizes


def main() -> int:
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    for name, sizes in compile_all(arch).items():
        print(f"sm{arch} {name}: " + ", ".join(f"{k} {v} bytes" for k, v in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
