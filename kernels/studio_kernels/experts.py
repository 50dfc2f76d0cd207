"""A layer's quantized experts in the AWQ layout and in the fused kernel's layout.

Convention (as AWQ checkpoints store them): gate and up are ``W[H, I]``, down is ``W[I, H]``,
used as ``y = x @ W``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio_kernels.awq import FusedLayout, pack_awq, repack_awq


@dataclass(frozen=True)
class AwqExperts:
    """Stacked AWQ tensors of E experts: ``*_q`` int32, ``*_z`` int32 (packed), ``*_s`` fp16."""

    gate_q: torch.Tensor  # [E, H, I/8]
    gate_z: torch.Tensor  # [E, H/G, I/8]
    gate_s: torch.Tensor  # [E, H/G, I]
    up_q: torch.Tensor
    up_z: torch.Tensor
    up_s: torch.Tensor
    down_q: torch.Tensor  # [E, I, H/8]
    down_z: torch.Tensor  # [E, I/G, H/8]
    down_s: torch.Tensor  # [E, I/G, H]
    group_size: int

    @property
    def num_experts(self) -> int:
        return self.gate_q.shape[0]

    @property
    def hidden(self) -> int:
        return self.gate_q.shape[1]

    @property
    def intermediate(self) -> int:
        return self.gate_s.shape[2]

    def weight(self, name: str, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(qweight, qzeros, scales) of projection ``name`` ('gate', 'up', 'down') of expert e."""
        return tuple(getattr(self, f"{name}_{p}")[e] for p in "qzs")  # type: ignore[return-value]

    def nbytes(self) -> int:
        return sum(getattr(self, f"{n}_{p}").nbytes for n in ("gate", "up", "down") for p in "qzs")


@dataclass(frozen=True)
class FusedExperts:
    """The same experts in the fused layout, gate and up stacked as ``w13`` rows [0, I) / [I, 2I)."""

    w13_q: torch.Tensor  # int32 [E, 2I, H/8]
    w13_z: torch.Tensor  # uint8 [E, 2I, H/G]
    w13_s: torch.Tensor  # [E, 2I, H/G]
    w2_q: torch.Tensor  # int32 [E, H, I/8]
    w2_z: torch.Tensor  # uint8 [E, H, I/G]
    w2_s: torch.Tensor  # [E, H, I/G]
    group_size: int

    @property
    def num_experts(self) -> int:
        return self.w13_q.shape[0]

    @property
    def hidden(self) -> int:
        return self.w2_q.shape[1]

    @property
    def intermediate(self) -> int:
        return self.w13_q.shape[1] // 2


def random_experts(
    num_experts: int,
    hidden: int,
    intermediate: int,
    group_size: int = 128,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> AwqExperts:
    """Seeded synthetic AWQ experts whose outputs stay O(1) for O(1) inputs.

    Random int4 weights (uniform words), zero points 7 or 8, and scales ~1/(4.6*sqrt(fan_in))
    so that ``x @ W`` has unit variance (a uniform nibble minus its zero has std ~4.6).
    """
    for name, dim in (("hidden", hidden), ("intermediate", intermediate)):
        if dim % group_size or dim % 8:
            raise ValueError(f"{name}={dim} must be a multiple of group_size={group_size} and 8")
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def one(k: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = torch.randint(-(2**31), 2**31, (num_experts, k, n // 8), generator=gen)
        z = torch.randint(7, 9, (num_experts * (k // group_size), n), generator=gen)
        z = pack_awq(z.to(torch.int32)).reshape(num_experts, k // group_size, n // 8)
        s = torch.rand((num_experts, k // group_size, n), generator=gen) + 0.5
        s = (s / (4.6 * k**0.5)).half()
        return q.to(torch.int32).to(device), z.to(device), s.to(device)

    gate, up, down = one(hidden, intermediate), one(hidden, intermediate), one(intermediate, hidden)
    return AwqExperts(*gate, *up, *down, group_size=group_size)


def fuse_experts(awq: AwqExperts, *, use_triton: bool = False) -> FusedExperts:
    """Repack every expert into the fused layout (Triton repack on request, torch otherwise)."""
    if use_triton:
        from studio_kernels.repack import repack_awq_triton as repack
    else:
        repack = repack_awq
    w13: list[tuple[FusedLayout, FusedLayout]] = []
    w2: list[FusedLayout] = []
    for e in range(awq.num_experts):
        w13.append((repack(*awq.weight("gate", e)), repack(*awq.weight("up", e))))
        w2.append(repack(*awq.weight("down", e)))

    def stack13(part: str) -> torch.Tensor:
        return torch.stack([torch.cat([getattr(g, part), getattr(u, part)]) for g, u in w13])

    return FusedExperts(
        w13_q=stack13("qweight"),
        w13_z=stack13("zeros"),
        w13_s=stack13("scales"),
        w2_q=torch.stack([d.qweight for d in w2]),
        w2_z=torch.stack([d.zeros for d in w2]),
        w2_s=torch.stack([d.scales for d in w2]),
        group_size=awq.group_size,
    )
