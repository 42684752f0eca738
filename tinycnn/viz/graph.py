"""The computation graph behind a tensor, as Graphviz DOT text.

Each recorded op becomes a box labelled with the op name (number constants it took shown in place,
e.g. ``Pow(., 2)``) and its output shape; each leaf
tensor (input or parameter) becomes an ellipse with its shape, filled when it requires a
gradient. Edges point from inputs to the op that used them, in the direction data flows.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from ..tensor import Tensor

__all__ = ["graph"]


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _op_name(ctx) -> str:
    """The op's name; number constants among its inputs are shown in place ("Pow(., 2)")."""
    args = [a for a in (ctx.inputs or ()) if a is not None]
    if not any(isinstance(a, (int, float, np.number)) and not isinstance(a, bool) for a in args):
        return ctx.fn.__name__
    shown = ["." if isinstance(a, Tensor) else repr(a.item() if isinstance(a, np.number) else a)
             for a in args if isinstance(a, (Tensor, int, float, np.number))]
    return f"{ctx.fn.__name__}({', '.join(shown)})"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def graph(tensor, params=None, path=None, fmt=None) -> str:
    """Return the DOT text of the graph that produced `tensor` (call it before backward(),
    which frees the graph).

    params: optional mapping name -> Tensor (e.g. ``dict(model.named_parameters())``) used to
        label leaf tensors by name.
    path: when given, also write the graph there: ``.dot`` as text; ``.svg``/``.png``/``.pdf``
        rendered by the Graphviz ``dot`` program (a RuntimeError says how to install it if absent).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a tinycnn Tensor, got {type(tensor).__name__}")
    names = {id(t): n for n, t in (params or {}).items()}
    ids: dict[int, str] = {}
    lines = ["digraph tinycnn {", '  rankdir="BT";', '  node [fontname="Helvetica", fontsize=10];']

    def node_id(obj) -> str:
        key = id(obj)
        if key not in ids:
            ids[key] = f"n{len(ids)}"
        return ids[key]

    def leaf(t) -> str:
        nid = node_id(t)
        name = names.get(id(t), "tensor")
        fill = ', style=filled, fillcolor="#cfe2ff"' if t.requires_grad else ""
        grad = "\\nrequires_grad" if t.requires_grad else ""
        lines.append(f'  {nid} [shape=ellipse, label="{_escape(name)}\\n{_shape(t.shape)}{grad}"{fill}];')
        return nid

    root_ctx = tensor._ctx
    if root_ctx is not None and root_ctx.freed:
        raise RuntimeError("tensor's graph was freed by backward(): call graph() before backward(), "
                           "or pass retain_graph=True to backward()")
    if root_ctx is None:
        leaf(tensor)
        lines.append("}")
        return _finish(lines, path, fmt)

    seen = set()
    stack = [root_ctx]
    while stack:
        ctx = stack.pop()
        if id(ctx) in seen:
            continue
        seen.add(id(ctx))
        op = node_id(ctx)
        lines.append(f'  {op} [shape=box, label="{_escape(_op_name(ctx))}\\n{_shape(ctx.out_shape)}"];')
        for a in ctx.inputs or ():
            if not isinstance(a, Tensor):
                continue
            if a._ctx is not None:
                src = node_id(a._ctx)
                stack.append(a._ctx)
            elif id(a) in ids:
                src = ids[id(a)]
            else:
                src = leaf(a)
            lines.append(f"  {src} -> {op};")
    lines.append(f'  out [shape=plaintext, label="output\\n{_shape(tensor.shape)}"];')
    lines.append(f"  {node_id(root_ctx)} -> out;")
    lines.append("}")
    return _finish(lines, path, fmt)


def _finish(lines, path, fmt) -> str:
    text = "\n".join(lines) + "\n"
    if path is None:
        return text
    path = os.fspath(path)
    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower() or "dot"
    if fmt in ("dot", "gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return text
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(f"writing {path!r} as {fmt} needs the Graphviz 'dot' program "
                           "(apt-get install graphviz / brew install graphviz); save as .dot instead")
    subprocess.run([dot, f"-T{fmt}", "-o", path], input=text.encode(), check=True)
    return text
