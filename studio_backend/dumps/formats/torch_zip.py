"""Memory-map a plain tensor saved by ``torch.save`` without running an unpickler.

A dump holds thousands of small ``.pth`` files; ``torch.load(mmap=True, weights_only=True)``
spends ~0.25 ms on each in Python (zip reader, restricted unpickler). A file that holds ONE
plain tensor has a fixed shape: a zip (entries stored, not compressed) with ``data.pkl``, a
``byteorder`` record and one storage record ``data/0``. Here the zip directory is read with
``struct`` and ``data.pkl`` is only *scanned* (``pickletools.genops`` decodes opcodes, it never
imports or calls anything): exactly the pattern ``_rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, OrderedDict())`` is accepted. Anything else returns None and the caller
falls back to ``torch.load(weights_only=True)``, which stays the only real unpickler.
"""

from __future__ import annotations

import functools
import pickletools
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

_STORAGES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}  # fmt: skip
_REBUILD = "torch._utils _rebuild_tensor_v2"
_EOCD = b"PK\x05\x06"
_CDIR = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory file header (46 bytes)
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header (30 bytes)
_TAIL = 1 << 12
_HEAD = 1 << 12


def _entries(tail: bytes, tail_start: int) -> dict[str, tuple[int, int, int]] | None:
    """name -> (compression method, size, local header offset) from the zip's directory."""
    e = tail.rfind(_EOCD)
    if e < 0 or len(tail) < e + 22:
        return None
    _sig, disk, _cd_disk, _n_disk, n, cd_size, cd_off, _clen = struct.unpack_from(
        "<IHHHHIIH", tail, e
    )
    if disk != 0 or cd_off == 0xFFFFFFFF or cd_off < tail_start:  # zip64 or directory not here
        return None
    pos, out = cd_off - tail_start, {}
    for _ in range(n):
        if pos + 46 > len(tail):
            return None
        f = _CDIR.unpack_from(tail, pos)
        if f[0] != 0x02014B50:
            return None
        method, usize, name_len, extra_len, comment_len, local = (
            f[4],
            f[9],
            f[10],
            f[11],
            f[12],
            f[16],
        )
        name = tail[pos + 46 : pos + 46 + name_len].decode("utf-8", "replace")
        out[name] = (method, usize, local)
        pos += 46 + name_len + extra_len + comment_len
    return out


def _record(head: bytes, entry: tuple[int, int, int]) -> tuple[int, int] | None:
    """(data offset, size) of a stored record whose local header lies in ``head``."""
    method, size, local = entry
    if method != 0 or local + 30 > len(head):
        return None
    sig, *_, name_len, extra_len = _LOCAL.unpack_from(head, local)
    if sig != 0x04034B50:
        return None
    return local + 30 + name_len + extra_len, size


@functools.lru_cache(maxsize=4096)  # a dump repeats few headers: same shape, dtype, key
def _scan(pkl: bytes) -> tuple[str, str, int, int, tuple, tuple] | None:
    """(storage class, key, numel, offset, size, stride) if ``pkl`` is a plain tensor pickle."""
    stack: list[object] = []
    marks: list[int] = []
    try:
        ops = list(pickletools.genops(pkl))
    except (ValueError, EOFError):
        return None
    for op, arg, _pos in ops:
        name = op.name
        if name in ("PROTO", "BINPUT", "LONG_BINPUT", "STOP"):
            continue
        if name == "GLOBAL":
            stack.append(("global", arg))
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BININT", "BININT1", "BININT2", "LONG1"):
            stack.append(arg)
        elif name in ("NEWFALSE", "NEWTRUE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            k = int(name[-1])
            if len(stack) < k:
                return None
            stack[-k:] = [tuple(stack[-k:])]
        elif name == "TUPLE":
            if not marks:
                return None
            m = marks.pop()
            stack[m:] = [tuple(stack[m:])]
        elif name == "BINPERSID":
            if not stack:
                return None
            stack.append(("pid", stack.pop()))
        elif name == "REDUCE":
            if len(stack) < 2:
                return None
            args, fn = stack.pop(), stack.pop()
            stack.append(("call", fn, args))
        else:  # memo reads, dicts, BUILD, ...: not the plain pattern
            return None
    if len(stack) != 1:
        return None
    top = stack[0]
    if not (isinstance(top, tuple) and len(top) == 3 and top[0] == "call"):
        return None
    _, fn, args = top
    if fn != ("global", _REBUILD) or not isinstance(args, tuple) or len(args) != 6:
        return None
    pid, offset, size, stride, grad, hooks = args
    if grad is not False or hooks != ("call", ("global", "collections OrderedDict"), ()):
        return None
    if not (isinstance(pid, tuple) and pid[0] == "pid" and isinstance(pid[1], tuple)):
        return None
    kind, storage, key, location, numel = (pid[1] + (None,) * 5)[:5]
    if kind != "storage" or location != "cpu" or not isinstance(storage, tuple):
        return None
    if storage[0] != "global" or not storage[1].startswith("torch "):
        return None
    if not all(isinstance(x, int) for x in (numel, offset, *size, *stride)):
        return None
    return storage[1].removeprefix("torch "), str(key), numel, offset, tuple(size), tuple(stride)


@dataclass(frozen=True)
class FileEnds:
    """A file's size, first 4 KiB and last 4 KiB: read once, for its content key and header."""

    size: int
    head: bytes
    tail: bytes
    tail_start: int


def read_ends(path: Path) -> FileEnds:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        tail_start = max(0, size - _TAIL)
        f.seek(tail_start)
        tail = f.read()
        f.seek(0)
        head = f.read(_HEAD)
    return FileEnds(size, head, tail, tail_start)


def mmap_plain_tensor(path: Path, ends: FileEnds | None = None) -> torch.Tensor | None:
    """The tensor in ``path`` memory-mapped (copy-on-write), or None if not the plain form."""
    ends = ends or read_ends(path)
    head, tail, tail_start, fsize = ends.head, ends.tail, ends.tail_start, ends.size
    entries = _entries(tail, tail_start)
    if not entries:
        return None
    pkl_names = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl_names) != 1:
        return None
    archive = pkl_names[0].split("/")[0]
    pkl_rec = _record(head, entries[pkl_names[0]])
    if pkl_rec is None or pkl_rec[0] + pkl_rec[1] > len(head):
        return None
    parsed = _scan(head[pkl_rec[0] : pkl_rec[0] + pkl_rec[1]])
    if parsed is None:
        return None
    storage_cls, key, numel, offset, size, stride = parsed
    dtype = _STORAGES.get(storage_cls)
    bo = entries.get(f"{archive}/byteorder")
    if dtype is None or bo is None:
        return None
    bo_rec = _record(head, bo)
    if bo_rec is None or head[bo_rec[0] : bo_rec[0] + bo_rec[1]] != b"little":
        return None
    data = entries.get(f"{archive}/data/{key}")
    storages = [n for n in entries if n.startswith(f"{archive}/data/")]
    if data is None or len(storages) != 1:
        return None
    rec = _record(head, data)
    elsize = torch.empty((), dtype=dtype).element_size()
    if rec is None or rec[1] != numel * elsize or rec[0] % elsize or rec[0] + rec[1] > fsize:
        return None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in (*size, *stride)):
        return None
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if all(size) and extent > numel:
        return None
    whole = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=fsize)
    storage = whole[rec[0] : rec[0] + rec[1]]
    return torch.empty((0,), dtype=dtype).set_(storage, offset, size, stride)
