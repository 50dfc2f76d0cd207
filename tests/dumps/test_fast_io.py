"""The ingest's fast paths against the libraries they stand in for.

``mmap_plain_tensor`` (zip directory + opcode scan) must give exactly what
``torch.load(weights_only=True)`` gives, and decline everything that is not one plain tensor;
``write_safetensors`` must write files that ``safetensors.safe_open`` reads back bit for bit.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from studio_backend.dumps.formats.common import load_tensor_file
from studio_backend.dumps.formats.torch_zip import mmap_plain_tensor
from studio_backend.errors import InputError
from studio_backend.workspace.tensor_store import TensorStore, write_safetensors


def _cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=g)
    return {
        "bf16": torch.randn(33, 64, generator=g).to(torch.bfloat16),
        "fp16_3d": torch.randn(4, 5, 6, generator=g).to(torch.float16),
        "f32": base,
        "f64": base.double(),
        "i64": torch.arange(-7, 50),
        "i32": torch.arange(24, dtype=torch.int32).reshape(2, 3, 4),
        "i16": torch.arange(-5, 5, dtype=torch.int16),
        "i8": torch.arange(-5, 5, dtype=torch.int8),
        "u8": torch.arange(200, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.empty(0, 7),
        "strided_view": base[:, ::3],  # saved with its whole storage, stride (10, 3)
        "offset_view": base[2:, 4:],  # storage offset 24
        "transposed": base.t(),
        "big_shape": torch.zeros(2, 1, 3, 1, 2, 2),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_fast_reader_equals_torch_load(tmp_path: Path, name: str) -> None:
    t = _cases()[name]
    f = tmp_path / f"{name}.pth"
    torch.save(t, f)
    want = torch.load(f, weights_only=True)
    got = mmap_plain_tensor(f)
    assert got is not None
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.stride() == want.stride() and got.storage_offset() == want.storage_offset()
    assert torch.equal(got, want)
    got.add_(1) if got.is_floating_point() else None  # copy-on-write: the file is untouched
    assert torch.equal(torch.load(f, weights_only=True), want)


def _save(obj: object, f: Path) -> Path:
    torch.save(obj, f)
    return f


def test_fast_reader_declines_what_is_not_one_plain_tensor(tmp_path: Path) -> None:
    t = torch.ones(3)
    declined = {
        "tuple": (t, t * 2),
        "dict": {"a": t},
        "list": [t],
        "int": 5,
        "grad": torch.ones(3, requires_grad=True),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }
    for name, obj in declined.items():
        assert mmap_plain_tensor(_save(obj, tmp_path / f"{name}.pth")) is None, name
    legacy = tmp_path / "legacy.pth"
    torch.save(t, legacy, _use_new_zipfile_serialization=False)
    assert mmap_plain_tensor(legacy) is None
    # ...and the loader still gives torch.load's answer for those it can read
    assert torch.equal(load_tensor_file(legacy), t)
    assert load_tensor_file(tmp_path / "grad.pth").requires_grad


class Evil:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would run code if unpickled
        return (print, ("pwned",))


def test_fast_reader_never_runs_a_pickle(tmp_path: Path, capsys) -> None:
    f = tmp_path / "evil.pth"
    torch.save(torch.ones(2), f)
    # swap data.pkl for a pickle that calls print(): the scan refuses it, torch.load refuses it
    buf = io.BytesIO()
    with zipfile.ZipFile(f) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps(Evil(), protocol=2)
            dst.writestr(info.filename, data)
    f.write_bytes(buf.getvalue())
    assert mmap_plain_tensor(f) is None
    with pytest.raises(InputError, match="refused unsafe pickle"):
        load_tensor_file(f)
    assert "pwned" not in capsys.readouterr().out


def test_fast_reader_on_truncated_file_defers_to_torch(tmp_path: Path) -> None:
    f = _save(torch.ones(1000), tmp_path / "t.pth")
    f.write_bytes(f.read_bytes()[:2000])
    assert mmap_plain_tensor(f) is None
    with pytest.raises(InputError, match="truncated"):
        load_tensor_file(f)


def test_write_safetensors_round_trip(tmp_path: Path) -> None:
    tensors = {k: v for k, v in _cases().items() if k not in ("strided_view",)}
    tensors["strided_view"] = _cases()["strided_view"]  # written contiguous
    f = tmp_path / "all.safetensors"
    write_safetensors(f, tensors, {"rule": "replicated", "note": "x"})
    with safe_open(str(f), framework="pt") as r:
        assert r.metadata() == {"rule": "replicated", "note": "x"}
        assert sorted(r.keys()) == sorted(tensors)
        for k, v in tensors.items():
            got = r.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape, k
            assert torch.equal(got, v), k


def test_store_views_are_column_ranges_of_the_stored_tensor(tmp_path: Path) -> None:
    store = TensorStore(tmp_path)
    full = torch.arange(40, dtype=torch.float32).reshape(4, 10).to(torch.bfloat16)
    store.put("g/qkv", {"tensor": full}, {"rule": "qkv"}, views={"q": ("tensor", 0, 6),
              "k": ("tensor", 6, 8), "v": ("tensor", 8, 10)})  # fmt: skip
    assert store.names("g/qkv") == ["tensor", "q", "k", "v"]
    np.testing.assert_array_equal(store.get("g/qkv", "k").float().numpy(), full[:, 6:8].float())
    assert torch.equal(store.get("g/qkv", "q"), full[:, :6])
    with pytest.raises(KeyError, match="'z' is not in tensor group"):
        store.get("g/qkv", "z")
    # the parts' bytes are stored once
    assert (tmp_path / "g" / "qkv.safetensors").stat().st_size < full.numel() * 2 + 512


def test_short_gil_switch_nests_and_restores() -> None:
    import sys

    from studio_backend.dumps.ingest import _short_gil_switch

    before = sys.getswitchinterval()
    with _short_gil_switch(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
        with _short_gil_switch(0.001):
            pass
        assert sys.getswitchinterval() == pytest.approx(0.001)  # still inside the outer one
    assert sys.getswitchinterval() == before
