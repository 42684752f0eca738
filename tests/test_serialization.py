"""tinycnn.save / tinycnn.load: safetensors round trip, atomic writes, clear errors, never pickle."""
import json
import os
import pickle
import struct

import numpy as np
import pytest

import tinycnn
from tinycnn import serialization


def _state(rng):
    return {
        "conv.weight": tinycnn.tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), requires_grad=True),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((2, 5)),                    # float64
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),      # 0-d int buffer
        "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,  # non-contiguous view
    }


def test_round_trip_values_dtypes_shapes(tmp_path, rng):
    sd = _state(rng)
    path = tmp_path / "model.safetensors"
    tinycnn.save(sd, path)
    back = tinycnn.load(path)
    assert set(back) == set(sd)
    for k, v in sd.items():
        expected = v.numpy() if isinstance(v, tinycnn.Tensor) else v
        assert isinstance(back[k], np.ndarray), k
        assert back[k].dtype == expected.dtype, k
        assert back[k].shape == expected.shape, k
        np.testing.assert_array_equal(back[k], expected)


def test_save_accepts_str_path(tmp_path):
    path = str(tmp_path / "a.safetensors")
    tinycnn.save({"x": np.ones(2, dtype=np.float32)}, path)
    np.testing.assert_array_equal(tinycnn.load(path)["x"], [1, 1])


def test_file_is_safetensors_format(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    tinycnn.save({"w": np.ones((2, 3), dtype=np.float32)}, path)
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    assert header["w"]["dtype"] == "F32" and header["w"]["shape"] == [2, 3]
    assert len(raw) == 8 + header_len + 2 * 3 * 4
    # the safetensors library itself reads it
    from safetensors.numpy import load_file
    np.testing.assert_array_equal(load_file(str(path))["w"], np.ones((2, 3)))


def test_readable_by_torch_safetensors(tmp_path, rng):
    from safetensors.torch import load_file
    w = rng.standard_normal((3, 2)).astype(np.float32)
    path = tmp_path / "m.safetensors"
    tinycnn.save({"w": w}, path)
    np.testing.assert_array_equal(load_file(str(path))["w"].numpy(), w)


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    tinycnn.save({"w": np.zeros(1, dtype=np.float32)}, path, metadata={"arch": "simplecnn", "epoch": "3"})
    assert serialization.load_metadata(path) == {"arch": "simplecnn", "epoch": "3"}


def test_no_pickle_is_used(tmp_path, rng, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must never be used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    path = tmp_path / "m.safetensors"
    tinycnn.save(_state(rng), path)
    tinycnn.load(path)
    src = open(serialization.__file__).read()
    assert "pickle" not in src.replace("never pickle", "")
    assert b"\x80\x04" not in path.read_bytes()[:2]   # not a pickle protocol header


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    tinycnn.save({"w": np.ones(3, dtype=np.float32)}, path)
    old = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        tinycnn.save({"w": np.zeros(1000, dtype=np.float32)}, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"], "temp file left behind"


def test_atomic_write_no_partial_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "new.safetensors"

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        tinycnn.save({"w": np.ones(3, dtype=np.float32)}, path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_creates_folder(tmp_path):
    path = tmp_path / "sub" / "dir" / "f.bin"
    serialization.atomic_write_bytes(path, b"abc")
    assert path.read_bytes() == b"abc"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-header-length", "empty"])
def test_corrupted_file_is_clear_value_error(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    tinycnn.save({"w": np.ones((4, 4), dtype=np.float32)}, path)
    raw = path.read_bytes()
    bad = {
        "garbage": b"this is not a safetensors file at all",
        "truncated": raw[:-10],
        "bad-header-length": struct.pack("<Q", 10 ** 12) + raw[8:],
        "empty": b"",
    }[damage]
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="not a valid safetensors file.*m.safetensors|m.safetensors.*not a valid"):
        tinycnn.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        tinycnn.load(tmp_path / "nope.safetensors")


def test_save_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="dict"):
        tinycnn.save([np.ones(2)], tmp_path / "a")
    with pytest.raises(TypeError, match="keys must be str.*3"):
        tinycnn.save({3: np.ones(2)}, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_model_load_state_dict_from_file(tmp_path):
    nn = tinycnn.nn
    tinycnn.manual_seed(0)
    m1 = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    tinycnn.manual_seed(1)
    m2 = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    path = tmp_path / "m.safetensors"
    tinycnn.save(m1.state_dict(), path)
    m2.load_state_dict(tinycnn.load(path))
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)
    x = tinycnn.randn(2, 1, 8, 8)
    np.testing.assert_array_equal(m1(x).numpy(), m2(x).numpy())
