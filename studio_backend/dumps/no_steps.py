"""A dump with a model tree and no step folders: say why instead of ingesting nothing.

msit writes ``model_tree.json`` when its hooks are registered and one folder per step when
hooked modules run. A compiled engine (vLLM without ``--enforce-eager``: torch.compile, CUDA or
ACL graphs) runs the captured graph instead of the modules, so no hook fires: the dump holds
the tree and no step (measured with real vLLM 0.32 on CPU; seed 000 recommends eager mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studio_backend.errors import InputError

if TYPE_CHECKING:
    from studio_backend.dumps.detect import DumpLayout

MESSAGE = (
    "holds model_tree.json but no step folders: no hooked module ran. A compiled engine "
    "(torch.compile, CUDA/ACL graphs) bypasses module hooks: launch vLLM with --enforce-eager "
    "(the Launch page's 'Enforce eager'), send the request again, then ingest"
)


def require_steps(layout: DumpLayout) -> None:
    """Raise InputError when no rank folder of an msit dump has a step folder but one has a tree."""
    if layout.format != "msit" or not layout.folders:
        return
    paths = [f.path for f in layout.folders.values()]
    if any(p.is_dir() and any(c.name.isdigit() for c in p.iterdir()) for p in paths):
        return
    if any((p / "model_tree.json").is_file() for p in paths):
        raise InputError(layout.root, MESSAGE)
