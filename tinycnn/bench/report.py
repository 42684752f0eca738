"""Turn a results dict into the stdout tables, the JSON file and the PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["op_table", "e2e_table", "cold_table", "epoch_table", "scaling_table", "write_json", "write_plots", "IMPL_ORDER"]

IMPL_ORDER = ("numpy", "numba", "cupy", "numba_cuda", "cupy[ours]", "cupy[cublas]", "numba_cuda[ours]",
              "numba_cuda[cublas]", "torch", "torch_cl", "torch_cuda")
_SHORT = {"unavailable": "-", "wrong": "WRONG", "error": "ERROR", "not timed": "n/t"}


def _impls_in(records) -> list[str]:
    seen = {k for r in records for k in r.get("impls", {})}
    return [k for k in IMPL_ORDER if k in seen] + sorted(seen - set(IMPL_ORDER))


def _cell(r: dict | None, peer: bool) -> str:
    if r is None:
        return ""
    if r.get("median") is None:
        return _SHORT.get(r.get("status"), r.get("status", ""))
    ms = r["median"] * 1e3
    txt = f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"
    if not peer and r.get("ratio_vs_torch_cuda") is not None:
        txt += f" ({r['ratio_vs_torch_cuda']:.2f}x torch_cuda)"
    elif not peer and r.get("ratio_vs_torch") is not None:
        txt += f" ({r['ratio_vs_torch']:.2f}x)"
    return txt


def _fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-|-".join("-" * w for w in widths)]
    out += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def op_table(records: list[dict], ceilings: dict) -> str:
    """One row per case: median ms of each implementation (ratio to PyTorch CPU), and the roofline."""
    impls = _impls_in(records)
    gemm, bw = ceilings.get("gemm_gflops"), ceilings.get("bandwidth_gbps")
    header = ["op", "shape"] + [f"{k} ms" for k in impls] + ["best tinycnn", "% of peak"]
    rows = []
    for rec in records:
        row = [rec["op"], rec["label"]] + [_cell(rec["impls"].get(k), rec["impls"].get(k, {}).get("peer", False))
                                           for k in impls]
        ours = [(k, r) for k, r in rec["impls"].items() if not r.get("peer") and r.get("median")
                and r.get("device") == "cpu"]
        if ours:
            k, r = min(ours, key=lambda kr: kr[1]["median"])
            if r.get("gflops") is not None:
                row += [f"{r['gflops']:.1f} GFLOP/s ({k})", f"{100 * r['gflops'] / gemm:.0f}% GEMM" if gemm else ""]
            elif r.get("gbps") is not None:
                row += [f"{r['gbps']:.1f} GB/s ({k})", f"{100 * r['gbps'] / bw:.0f}% copy" if bw else ""]
            else:
                row += ["", ""]
        else:
            row += [rec.get("note", ""), ""]
        rows.append(row)
    return _fmt_table(header, rows)


def e2e_table(records: list[dict]) -> str:
    impls = _impls_in(records)
    header = ["model", "batch", "step"] + [f"{k} ms" for k in impls]
    rows = []
    for rec in records:
        row = [rec["model"], str(rec["batch"]), rec["mode"]]
        row += [_cell(rec.get("impls", {}).get(k), rec.get("impls", {}).get(k, {}).get("peer", k.startswith("torch")))
                for k in impls]
        if rec.get("note"):
            row[-1] = (row[-1] + " " if row[-1] else "") + f"[{rec['note']}]"
        rows.append(row)
    return _fmt_table(header, rows)


def cold_table(records: list[dict]) -> str:
    """The first eval forward and the first train forward + backward of each model in this process
    (Numba compilation or cache loading, lazy buffers, PyTorch's first-call set-up): the cold start."""
    impls = _impls_in(records)
    rows = []
    for rec in records:
        if rec.get("mode") != "train":
            continue
        for key, what in (("cold_infer_s", "first eval forward"), ("cold_fwd_bwd_s", "first forward+backward")):
            cells = [f"{1e3 * r[key]:.0f}" if (r := rec.get("impls", {}).get(k)) and r.get(key) else ""
                     for k in impls]
            if any(cells):
                rows.append([rec["model"], str(rec["batch"]), what] + cells)
    return _fmt_table(["model", "batch", "call"] + [f"{k} ms" for k in impls], rows) if rows else ""


def epoch_table(ep: dict) -> str:
    if "impls" not in ep:
        return ep.get("note", "")
    rows = []
    for k, r in ep["impls"].items():
        if r.get("images_per_s"):
            rows.append([k, f"{r['images_per_s']:.0f}", f"{r['median']:.2f}", f"{r.get('cold_epoch_s', float('nan')):.2f}",
                         f"{r['speed_vs_torch']:.2f}x" if r.get("speed_vs_torch") else ""])
        else:
            rows.append([k, _SHORT.get(r.get("status"), r.get("status")), r.get("message", "")[:60], "", ""])
    title = (f"{ep['model']} on {Path(ep['file']).name}, batch {ep['batch']}, {ep['images']} images"
             f"{' (part of the epoch: --quick)' if ep['partial'] else ' (full train split)'}")
    return title + "\n" + _fmt_table(["impl", "images/s", "epoch s", "cold epoch s", "speed vs torch"], rows)


def scaling_table(sc: dict) -> str:
    rows = []
    for r in sc.get("results", []):
        if r.get("status") != "ok":
            rows.append([r["impl"], str(r["batch"]), str(r["input_size"]), "ERROR", r.get("message", "")[:70], "", ""])
            continue
        rows.append([r["impl"], str(r["batch"]), str(r["input_size"]), f"{1e3 * r['median_s']:.1f}",
                     f"{r['images_per_s']:.0f}", f"{r['loop_peak_rss_mb']:.0f}",
                     f"{r['step_extra_mb']:.0f}" if r.get("step_extra_mb") is not None else ""])
    return _fmt_table(["impl", "batch", "size", "ms/step", "images/s", "loop peak RSS MB", "step extra MB"], rows)


def _clean(obj):
    """JSON-safe copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(results: dict, path: Path) -> None:
    from ..serialization import atomic_write_bytes  # noqa: PLC0415
    atomic_write_bytes(path, json.dumps(_clean(results), indent=1).encode("utf-8"))


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


def _ratio_plot(records, path: Path, title: str):
    plt = _plt()
    impls = [k for k in _impls_in(records) if not k.startswith("torch")]
    rows = [r for r in records if any(r["impls"].get(k, {}).get("ratio_vs_torch") for k in impls)]
    if not rows:
        return None
    h = max(3.0, 0.28 * len(rows) * max(1, len(impls)) ** 0.5 + 1.2)
    fig, ax = plt.subplots(figsize=(9, h))
    y = np.arange(len(rows))
    bar = 0.8 / max(1, len(impls))
    for j, k in enumerate(impls):
        vals = [r["impls"].get(k, {}).get("ratio_vs_torch") or np.nan for r in rows]
        ax.barh(y + j * bar - 0.4 + bar / 2, vals, height=bar, label=k)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['op']} | {r['label']}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time / PyTorch CPU time (median, log scale; < 1 is faster than PyTorch)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _roofline_plot(records, ceilings, path: Path):
    plt = _plt()
    gemm, bw = ceilings.get("gemm_gflops"), ceilings.get("bandwidth_gbps")
    comp, mem = [], []
    for r in records:
        for k, im in r["impls"].items():
            if im.get("device") != "cpu" or not im.get("median"):
                continue
            if im.get("gflops") is not None and gemm:
                comp.append((f"{r['op']} | {r['label']}", k, im["gflops"] / gemm))
            elif im.get("gbps") is not None and bw:
                mem.append((f"{r['op']} | {r['label']}", k, im["gbps"] / bw))
    if not comp and not mem:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.0, 0.12 * max(len(comp), len(mem)) + 1.5)))
    for ax, data, what in ((axes[0], comp, f"GFLOP/s / GEMM peak ({gemm:.0f} GFLOP/s)" if gemm else ""),
                           (axes[1], mem, f"GB/s / copy bandwidth ({bw:.1f} GB/s)" if bw else "")):
        impls = sorted({d[1] for d in data}, key=lambda k: IMPL_ORDER.index(k) if k in IMPL_ORDER else 99)
        labels = list(dict.fromkeys(d[0] for d in data))
        for k in impls:
            xs = [next((d[2] for d in data if d[0] == lab and d[1] == k), np.nan) for lab in labels]
            ax.plot(xs, np.arange(len(labels)), "o", label=k, ms=4)
        ax.axvline(1.0, color="k", lw=1)
        ax.set_yticks(np.arange(len(labels)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel(what, fontsize=8)
        if impls:
            ax.legend(fontsize=7)
    axes[0].set_title("compute-bound ops (minimum FLOPs)", fontsize=9)
    axes[1].set_title("memory-bound ops (minimum bytes moved)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _scaling_plot(sc, path: Path):
    plt = _plt()
    ok = [r for r in sc.get("results", []) if r.get("status") == "ok"]
    if not ok:
        return None
    impls = list(dict.fromkeys(r["impl"] for r in ok))
    fixed_size = 28
    sizes = [r["input_size"] for r in ok if r["input_size"] != fixed_size]
    fixed_batch = min((r["batch"] for r in ok if r["input_size"] in sizes), default=None)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for k in impls:
        rb = sorted((r for r in ok if r["impl"] == k and r["input_size"] == fixed_size), key=lambda r: r["batch"])
        rs = sorted((r for r in ok if r["impl"] == k and r["batch"] == fixed_batch), key=lambda r: r["input_size"])
        axes[0, 0].plot([r["batch"] for r in rb], [1e3 * r["median_s"] for r in rb], "o-", label=k)
        axes[1, 0].plot([r["batch"] for r in rb], [r["loop_peak_rss_mb"] for r in rb], "o-", label=k)
        axes[0, 1].plot([r["input_size"] ** 2 for r in rs], [1e3 * r["median_s"] for r in rs], "o-", label=k)
        axes[1, 1].plot([r["input_size"] ** 2 for r in rs], [r["loop_peak_rss_mb"] for r in rs], "o-", label=k)
    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_title(f"training step, {fixed_size}x{fixed_size} images", fontsize=9)
    axes[0, 1].set_title(f"training step, batch {fixed_batch}", fontsize=9)
    axes[0, 0].set_ylabel("ms / step (median)")
    axes[1, 0].set_ylabel("peak RSS of the training loop (MB)")
    axes[1, 0].set_xlabel("batch size")
    axes[1, 1].set_xlabel("pixels per image (H x W)")
    fig.suptitle("reference CNN (simplecnn) training step: scaling (one process per point)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(results: dict, out_dir: Path) -> list[str]:
    """The PNGs of the results page; returns the paths written."""
    out = []
    ops = results.get("ops", [])
    prim = [r for r in ops if r["kind"] == "primitive"]
    api = [r for r in ops if r["kind"] != "primitive"] + [
        dict(r, op=f"{r['model']} {r['mode']}", label=f"batch {r['batch']}") for r in results.get("e2e", [])
        if r.get("impls")]
    for recs, name, title in ((prim, "ops_ratio.png", "primitives (one kernel call) vs PyTorch CPU"),
                              (api, "api_ratio.png", "public ops (forward + backward) and whole models vs PyTorch CPU")):
        p = _ratio_plot(recs, out_dir / name, title)
        if p:
            out.append(str(p))
    p = _roofline_plot(ops, results.get("ceilings", {}), out_dir / "roofline.png")
    if p:
        out.append(str(p))
    p = _scaling_plot(results.get("scaling", {}), out_dir / "scaling.png")
    if p:
        out.append(str(p))
    return out
