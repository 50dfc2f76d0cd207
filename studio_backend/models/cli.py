"""``studio model create``: synthetic Qwen3-MoE checkpoints."""

from __future__ import annotations

import argparse

from studio_backend.models.presets import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="synthetic Qwen3-MoE checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    c = msub.add_parser("create", help="write an HF-format Qwen3-MoE checkpoint (random weights)")
    c.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size")
    c.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output directory")
    c.add_argument("--layers", type=int, default=None, help="number of decoder layers")
    c.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    c.add_argument(
        "--outliers",
        action="store_true",
        help="look like a real LLM inside: massive activations on the start and delimiter tokens "
        "in two fixed channels, token-dependent hidden states, long-tailed expert routing",
    )
    c.set_defaults(func=cmd_create)


def cmd_create(args: argparse.Namespace) -> int:
    from studio_backend.models.create import create_model  # torch: imported only when creating

    out = create_model(
        args.out, preset=args.preset, layers=args.layers, seed=args.seed, outliers=args.outliers
    )
    print(out)
    return 0
