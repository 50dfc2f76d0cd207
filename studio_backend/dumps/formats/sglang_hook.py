"""SGLang ``--debug-tensor-dump-output-folder`` dumps (``debug_utils/tensor_dump_forward_hook.py``).

Layout: ``<dir>/TP{tp_rank}_PP{pp_rank}_Rank{rank}_pid{pid}/Pass{NNNNN}.pt``, one file per
forward pass, each ``torch.save`` of a dict: dotted module name -> that module's output. What
SGLang writes (and so what is accepted here):

- Hooks sit on LEAF modules plus the top-level ``model``. A tuple/list output keeps only its
  tensor members (``None`` dropped) and collapses to the bare tensor when one is left
  (``add_tensor``); a list that still holds ``None`` (older or hand-written dumps) is read
  by position. ``LogitsProcessorOutput`` is stored as its ``next_token_logits``.
- The ``model`` hook, when the model's forward ends, adds ``model.forward_batch_info.{input_ids,
  seq_lens,positions}``, SAVES the pass, then adds ``model``'s own output to the next pass's
  dict; ``logits_processor`` runs after and lands there too. So in ``Pass N`` the entries
  ``model`` and those outside ``model.`` belong to forward pass N-1: they are filed under step
  N-1 (in ``Pass00000`` they cannot come from an earlier pass and are reported, not guessed).
- SGLang's ``q_norm``/``k_norm`` run on ``q.reshape(-1, head_dim)`` (models/utils.py
  ``apply_qk_norm``): ``[tokens*heads, head_dim]``. They are read as ``[tokens, heads,
  head_dim]`` (tokens = rows of the same layer's ``qkv_proj`` output, else of ``input_ids``),
  the layout vLLM dumps, so heads stitch on dim -2 like vLLM's.

Only ``torch.load(..., weights_only=True)`` is used (dicts, lists and tensors load that way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio_backend.dumps.formats.common import Member, RankFolder, TensorRef, load_container
from studio_backend.dumps.formats.sglang_names import sglang_class
from studio_backend.errors import InputError

_RANK_DIR = re.compile(r"^TP(\d+)_PP(\d+)_Rank(\d+)_pid(\d+)$")
_PASS = re.compile(r"^Pass(\d+)\.pt$")
_FBI = ".forward_batch_info."


def parse_rank_dir(name: str) -> tuple[int, int, int, int] | None:
    """(tp_rank, pp_rank, rank, pid) of a ``TP0_PP0_Rank0_pid123`` folder name, or None."""
    m = _RANK_DIR.match(name)
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def find_root(start: Path) -> Path:
    """The output folder holding the ``TP*_PP*_Rank*_pid*`` folders (from any folder inside)."""
    for p in (start, *start.parents):
        if parse_rank_dir(p.name):
            return p.parent
        if p.is_dir() and any(c.is_dir() and parse_rank_dir(c.name) for c in p.iterdir()):
            return p
    raise InputError(start, "no SGLang tensor dump here (expected TP<t>_PP<p>_Rank<r>_pid<n>/)")


def is_sglang_hook(start: Path) -> bool:
    try:
        root = find_root(start)
    except (InputError, OSError):
        return False
    return any(root.glob("TP*_PP*_Rank*_pid*/Pass*.pt"))


def list_rank_folders(root: Path) -> list[RankFolder]:
    """One folder per TP rank; pipeline parallelism and restarts into one folder are refused."""
    folders: dict[int, RankFolder] = {}
    for p in sorted(root.iterdir()):
        parsed = parse_rank_dir(p.name) if p.is_dir() else None
        if parsed is None:
            continue
        tp_rank, pp_rank, _rank, pid = parsed
        if pp_rank != 0:
            raise InputError(p, "pipeline-parallel SGLang dumps (PP > 0) are not stitched: "
                                "dump with --pp-size 1")  # fmt: skip
        if tp_rank in folders:
            raise InputError(root, f"two folders for TP rank {tp_rank} ({folders[tp_rank].folder}, "
                                   f"{p.name}): a restarted server wrote into the same output "
                                   "folder; move one run's folders elsewhere")  # fmt: skip
        folders[tp_rank] = RankFolder(p.name, p, None, None, pid, tp_rank)
    return [folders[r] for r in sorted(folders)]


def iter_tensor_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("TP*_PP*_Rank*_pid*/Pass*.pt") if _PASS.match(p.name))


def pass_of(path: Path) -> int | None:
    m = _PASS.match(path.name)
    return int(m.group(1)) if m else None


def _top_name(entries: dict[str, Any]) -> str:
    for k in entries:
        if _FBI in k:
            return k.split(_FBI, 1)[0]
    return "model"


def _rows(v: Any) -> int | None:
    if isinstance(v, list | tuple):
        v = next((t for t in v if isinstance(t, torch.Tensor)), None)
    return int(v.shape[0]) if isinstance(v, torch.Tensor) and v.dim() >= 1 else None


def _tensors(v: Any, index: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """(index path, tensor) of every tensor in an entry (None members skipped, lists nested)."""
    if isinstance(v, torch.Tensor):
        return [(index, v)]
    if isinstance(v, list | tuple):
        return [x for i, item in enumerate(v) for x in _tensors(item, (*index, i))]
    return []


@dataclass
class HookReader:
    """Turns one ``Pass*.pt`` into TensorRefs (one per tensor inside)."""

    root: Path
    notes: list[tuple[Path, str]] = field(default_factory=list)
    architectures: list[str] | None = None  # config.json's, when found

    def refs(self, path: Path) -> list[TensorRef]:
        n = pass_of(path)
        if n is None or parse_rank_dir(path.parent.name) is None:
            return []
        obj = load_container(path)
        if not isinstance(obj, dict):
            raise InputError(path, f"holds a {type(obj).__name__}, not a dict of module outputs")
        top = _top_name(obj)
        out = []
        for key, value in obj.items():
            key = str(key)
            members = _tensors(value)
            if not members:
                self.notes.append((path, f"entry {key!r} holds no tensor "
                                         f"({type(value).__name__}); skipped"))  # fmt: skip
                continue
            step = n
            if key == top or not key.startswith(top + "."):
                step = n - 1  # added after the pass was saved: belongs to the previous pass
                if step < 0:
                    self.notes.append((path, f"entry {key!r} in the first pass cannot belong to "
                                             "an earlier pass (SGLang saves it with the next "
                                             "one); skipped"))  # fmt: skip
                    continue
            for index, t in members:
                view = self._qk_view(obj, key, t, top)
                if view is False:
                    self.notes.append((path, f"{key}: {list(t.shape)} cannot be split into "
                                             "tokens x heads (no qkv_proj output or input_ids "
                                             "in this pass); skipped"))  # fmt: skip
                    continue
                out.append(TensorRef(
                    path=path, rank_folder=path.parent.name, step=step, module=key, io="output",
                    idx=index[0] if index else 0,
                    arg_name="_".join(map(str, index)) if len(index) > 1 else None,
                    module_class=sglang_class(key, top, self.architectures),
                    member=Member(key, index, view or None),
                ))  # fmt: skip
        return out

    @staticmethod
    def _qk_view(obj: dict[str, Any], key: str, t: torch.Tensor, top: str):  # noqa: ANN205
        """[tokens, heads, head_dim] for a 2-D q_norm/k_norm tensor; () if not one; False if
        it is one but the token count is unknown."""
        last = key.rsplit(".", 1)[-1]
        if last not in ("q_norm", "k_norm") or t.dim() != 2:
            return ()
        tokens = _rows(obj.get(key[: -len(last)] + "qkv_proj"))
        if tokens is None:
            tokens = _rows(obj.get(top + _FBI + "input_ids"))
        if not tokens or t.shape[0] % tokens:
            return False
        return (tokens, t.shape[0] // tokens, int(t.shape[1]))
