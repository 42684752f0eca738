"""save/load of tensors as safetensors files (never pickle), written atomically."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .tensor import Tensor

__all__ = ["save", "load", "atomic_write_bytes"]

# header metadata entry with the names in the order save() got them: safetensors lays tensors out by
# dtype and name, so without it load() could not give a state_dict back in PyTorch's (registration) order
_ORDER_KEY = "__tinycnn_key_order__"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(obj, path, metadata=None) -> None:
    """Save a dict of name -> Tensor/array to a safetensors file at `path` (atomically).

    metadata: optional dict of str -> str stored in the file header.
    """
    from safetensors.numpy import save as st_save

    if not isinstance(obj, dict):
        raise TypeError(f"obj must be a dict of names to Tensors or arrays, got {type(obj).__name__}")
    arrays = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise TypeError(f"state dict keys must be str, got {k!r}")
        a = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
        if a.dtype.kind not in "biufc":
            # safetensors stores numeric arrays only (its own error would not name the key)
            raise TypeError(f"obj[{k!r}] must be a Tensor or a numeric array, got {type(v).__name__} "
                            f"of dtype {a.dtype}")
        # asarray(order='C'), not ascontiguousarray: the latter turns 0-d buffers into shape (1,)
        arrays[k] = np.asarray(a, order="C")
    meta = dict(metadata or {})
    meta[_ORDER_KEY] = json.dumps(list(arrays))
    atomic_write_bytes(path, st_save(arrays, metadata=meta))


def load(path) -> dict:
    """Load a safetensors file into a dict of name -> NumPy array, in the order the names were saved."""
    from safetensors.numpy import load as st_load

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        arrays = dict(st_load(data))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a valid safetensors file (corrupted or truncated?): {exc}") from exc
    order = _saved_order(data)
    if order is not None and sorted(order) == sorted(arrays):
        arrays = {k: arrays[k] for k in order}
    return arrays


def _saved_order(data: bytes):
    """The key order recorded by save() in the header (8-byte length, then JSON), or None."""
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
        order = json.loads(meta[_ORDER_KEY])
        return order if isinstance(order, list) else None
    except Exception:  # noqa: BLE001 - a file from another writer: keep safetensors' order
        return None


def load_metadata(path) -> dict:
    """The str -> str metadata stored in a safetensors file's header."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
    meta.pop(_ORDER_KEY, None)
    return meta
