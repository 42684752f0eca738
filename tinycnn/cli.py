"""The `tinycnn` command line (contract: docs/cli.md).

    tinycnn datasets | train | evaluate | predict | summary | convert | bench   (each with --help)

On bad input every command exits with status 2 and prints ONE line `tinycnn: error: ...` on stderr
(the full traceback only with --debug). Progress bars go to a TTY only and disappear with --quiet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]

EXIT_ERROR = 2


class CLIError(Exception):
    """A user error with a message ready to print."""


# ---------------------------------------------------------------------------------------------- parser
def _common(p, top=False):
    # sub-commands must not reset a top-level `tinycnn --debug train` to False, hence SUPPRESS
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")
    p.add_argument("--quiet", "-q", action="store_true", default=default,
                   help="no progress bars or per-epoch lines")


def _data_dir(p):
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with <name>.npz files (looked up before $TINYCNN_DATA_DIR and ~/.cache/tinycnn)")


def _checked(convert, ok, expected):
    """An argparse type: `convert` the text, then require `ok(value)`; one message for both failures."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
# float() accepts "nan" and "inf": every float option must be finite (nan fails every comparison)
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
_decay = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
_unit_float = _checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _flips(text):
    from .training.trainer import tta_name
    return tta_name(text)


def _tta_option(p, default):
    p.add_argument("--tta", type=_checked(_flips, lambda v: True, "'none' or flips among hflip, vflip "
                                          "(e.g. 'hflip' or 'hflip,vflip')"), default=None, metavar="FLIPS",
                   help="test-time flips: the probabilities are averaged over the image and its flips ('hflip', "
                        f"'vflip', 'hflip,vflip' or 'none'; default: {default})")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (no usage dump) with exit status 2."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="tinycnn", description="tinycnn: train and use small CNNs on medical images "
                     "(MedMNIST, image folders, synthetic data).")
    parser.add_argument("--version", action="version", version=f"tinycnn {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("datasets", help="list known datasets and where their files are found",
                       description="Table of known datasets: task, classes, channels, split sizes, and where the "
                                   "file is found (MD5-verified).")
    _data_dir(p)
    p.add_argument("--no-verify", action="store_true", help="do not compute MD5s (faster)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    _common(p)

    p = sub.add_parser("train", help="train a model and write a run directory",
                       description="Train a classifier. Settings left out come from the default recipe, chosen "
                                   "from the dataset's properties (channels, classes, size, imbalance). Writes "
                                   "config.json, best/last checkpoints, history.csv, metrics.json and plots to --out.")
    p.add_argument("--dataset", default="synthetic",
                   help="MedMNIST name (pneumoniamnist, breastmnist, chestmnist, ...), 'synthetic' (default, no "
                        "download), 'synthetic-multilabel' (4 labels, no download) or an image folder")
    _data_dir(p)
    p.add_argument("--model", default=None, help="simplecnn, vgg (default) or resnet18")
    p.add_argument("--ensemble", type=_positive_int, default=None, metavar="K",
                   help="train K members side by side and average their softmax (per-label sigmoid for "
                        "multi-label data); one checkpoint holds all "
                        "(default: as many, up to 5, as fit in 600k training image passes: 5 for "
                        "546 images, 3 for 4708, 1 from about 12k)")
    p.add_argument("--ema", type=_decay, default=None, metavar="DECAY",
                   help="validate and save an exponential moving average of the weights, updated after every "
                        "step as avg += (1 - DECAY) * (w - avg); 0 = off (default: the recipe's, see docs)")
    p.add_argument("--mixup", type=_non_negative_float, default=None, metavar="ALPHA",
                   help="train on mixed pairs of images, lam x + (1 - lam) x', with the loss mixed alike, "
                        "lam ~ Beta(ALPHA, ALPHA); 0 = off (default: off)")
    _tta_option(p, "the flips of --augment; validation, test and the checkpoint's predictions use them")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--optimizer", default=None, choices=["adamw", "adam", "sgd", "rmsprop", "adagrad"])
    p.add_argument("--weight-decay", type=_non_negative_float, default=None)
    p.add_argument("--momentum", type=_non_negative_float, default=None, help="SGD/RMSprop momentum (default 0.9)")
    p.add_argument("--scheduler", default=None, choices=["cosine", "step", "plateau", "none"],
                   help="cosine (with warm-up, default), step, plateau or none")
    p.add_argument("--warmup-epochs", type=_nonneg_int, default=None)
    p.add_argument("--loss", default=None, choices=["ce", "focal"])
    p.add_argument("--focal-gamma", type=_non_negative_float, default=None)
    p.add_argument("--label-smoothing", type=_unit_float, default=None)
    p.add_argument("--class-weights", default=None, choices=["balanced", "none"])
    p.add_argument("--augment", default=None, metavar="SPEC",
                   help="e.g. 'hflip,rotate=10,shift=0.07,scale=0.1,brightness=0.1,contrast=0.1' or 'none'")
    p.add_argument("--patience", type=_nonneg_int, default=None, help="early stopping (epochs; 0 = off)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default runs/<dataset>-<model>-seed<S>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--init-from", default=None, metavar="CKPT", help="start from this checkpoint's weights")
    p.add_argument("--freeze", default=None, metavar="PREFIXES",
                   help="comma-separated parameter-name prefixes to freeze (e.g. features)")
    p.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="shorten training to fit this many seconds (default 780 when --epochs is not given)")
    p.add_argument("--subset", type=_positive_int, default=None, metavar="N",
                   help="use at most N images per split (quick checks)")
    _common(p)

    p = sub.add_parser("evaluate", help="metrics of a run or checkpoint on a dataset split",
                       description="Evaluate best.safetensors of --run, or --checkpoint, on a split.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", metavar="DIR", help="run directory (uses its best.safetensors)")
    g.add_argument("--checkpoint", metavar="FILE", help="a .safetensors checkpoint written by tinycnn train")
    p.add_argument("--dataset", default=None, help="dataset, in full (default: the data the checkpoint was "
                   "trained on, with its --subset)")
    _data_dir(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--probs-out", metavar="FILE.npy", help="save (N, classes) probabilities in dataset order "
                   "((N, labels) per-label sigmoid probabilities for a multi-label model)")
    _tta_option(p, "those the checkpoint was trained and validated with")
    _common(p)

    p = sub.add_parser("predict", help="classify image files (optionally with Grad-CAM overlays)",
                       description="Class and probabilities per image file (PNG/JPEG/...), resized to the "
                                   "checkpoint's input size. A multi-label model prints every label's "
                                   "probability and the labels at or above 0.5; Grad-CAM shows the most "
                                   "probable label.")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--gradcam", metavar="OUT.png", help="write image + Grad-CAM overlay pairs to this PNG")
    p.add_argument("--feature-maps", metavar="DIR", help="write a grid PNG of each image's feature maps at --layer to DIR")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the model's last conv stage)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _tta_option(p, "those the checkpoint was trained and validated with")
    _common(p)

    p = sub.add_parser("summary", help="layer table: output shapes, parameters, FLOPs",
                       description="Layer-by-layer summary of a model for one input image.")
    p.add_argument("--model", required=True, help="simplecnn, vgg or resnet18")
    p.add_argument("--input", default="1,28,28", metavar="C,H,W", help="input shape (default 1,28,28)")
    p.add_argument("--classes", type=_positive_int, default=2)
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("convert", help="DICOM and other images to de-identified PNG",
                       description="Convert DICOM (pydicom, rescale + windowing, MONOCHROME1 inverted; "
                                   "de-identifying) and other image files to PNG.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    p.add_argument("--to", required=True, metavar="DIR", help="output folder")
    p.add_argument("--window", default=None, metavar="CENTRE,WIDTH", help="override the DICOM window")
    p.add_argument("--sidecar", action="store_true", help="also write whitelisted acquisition tags as JSON")
    _common(p)

    p = sub.add_parser("bench", help="benchmark suite (JSON + PNG results)",
                       description="Run the benchmark suite; writes JSON and PNG results and prints ratios "
                                   "against PyTorch when it is installed.")
    p.add_argument("--quick", action="store_true", help="small grid, under 2 minutes on 2 cores")
    p.add_argument("--out", default="bench-results", metavar="DIR")
    p.add_argument("--only", default=None, metavar="SECTIONS", help="comma-separated: ops,e2e,epoch,scaling")
    p.add_argument("--ops", default=None, metavar="NAMES", help="op names to run in the ops section")
    p.add_argument("--threads", type=int, default=None, help="threads for BLAS, Numba and PyTorch alike")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding pneumoniamnist.npz")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    _common(p)
    return parser


# ---------------------------------------------------------------------------------------------- commands
def _output_folder(option, path):
    """Refuse an output folder that is an existing file (os.makedirs would say only 'File exists')."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{option} {path}: expected a folder, got an existing file")


def _say(args, text):
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def cmd_datasets(args):
    from . import data

    rows = data.dataset_table(args.data_dir, verify=not args.no_verify)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    w = max([16] + [len(r["name"]) for r in rows])
    head = f"{'name':<{w}} {'task':<26} {'classes':>7} {'ch':>3} {'train':>7} {'val':>6} {'test':>6}  file"
    print(head)
    print("-" * len(head))
    for r in rows:
        n = r["n_samples"]
        where = r.get("path") or "not found (downloaded on first use)"
        if r.get("verified") is True:
            where = f"{where} (md5 ok)"
        elif r.get("verified") is False:
            where = f"{where} (BAD: {r.get('error') or 'md5 mismatch'})"
        print(f"{r['name']:<{w}} {r['task']:<26} {r['n_classes']:>7} {r['n_channels']:>3} {n['train']:>7} "
              f"{n['val']:>6} {n['test']:>6}  {where}")
    return 0


def cmd_train(args):
    from .training.run import train_run

    keys = ("dataset", "data_dir", "model", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum",
            "scheduler", "warmup_epochs", "loss", "focal_gamma", "label_smoothing", "class_weights", "augment",
            "patience", "device", "seed", "out", "resume", "init_from", "freeze", "subset", "time_budget", "ensemble",
            "ema", "mixup", "tta")
    settings = {k: getattr(args, k) for k in keys}
    res = train_run(settings, log=lambda t: _say(args, t), quiet=args.quiet)
    m = res["metrics"]
    print(f"run directory: {res['run_dir']}")
    auc = "n/a" if m["auc"] is None else f"{m['auc']:.4f}"  # None: undefined (a test split with one class)
    print(f"test (best val-AUC checkpoint, epoch {m.get('best_epoch')}): AUC {auc}  ACC {m['acc']:.4f}")
    return 0


def cmd_evaluate(args):
    import numpy as np

    from .training.run import evaluate_checkpoint, format_metrics

    ckpt = args.checkpoint
    if args.run:
        if not os.path.isdir(args.run):
            raise CLIError(f"--run {args.run}: no such run directory")
        ckpt = os.path.join(args.run, "best.safetensors")
    m, probs, _ = evaluate_checkpoint(ckpt, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
                                      device=args.device, quiet=args.quiet, tta=args.tta)
    if args.probs_out:
        from .serialization import atomic_write_bytes
        import io
        buf = io.BytesIO()
        np.save(buf, probs.astype(np.float32), allow_pickle=False)
        try:
            atomic_write_bytes(args.probs_out, buf.getvalue())
        except OSError as exc:  # the error would name the temp file, not the user's path
            raise CLIError(f"--probs-out {args.probs_out}: cannot write the file ({exc.strerror or exc})") from exc
    if args.json:
        print(json.dumps(m))
    else:
        print(format_metrics(m))
        if str(m.get("task", "")).startswith("multi-label"):
            names = m.get("class_names") or [str(i) for i in range(len(m["confusion_matrix"]))]
            print("per-label confusion [[TN, FP], [FN, TP]] at p >= 0.5:")
            for name, cm in zip(names, m["confusion_matrix"]):
                print(f"  {name}: {cm}")
        else:
            print("confusion matrix (rows true, cols predicted):", m["confusion_matrix"])
    return 0


def load_images(paths, channels: int, size: int):
    """Image files -> float32 (N, C, size, size) in [0, 1] (Pillow; grey or RGB to match the model)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        if not os.path.isfile(p):
            raise CLIError(f"image not found: {p}")
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise CLIError(f"cannot read image {p}: {exc}") from exc
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(out)


def cmd_predict(args):
    import numpy as np

    from .training.checkpoint import build_model
    from .training.run import predict_probs

    model, meta = build_model(args.checkpoint, device=args.device)
    x = load_images(args.images, int(meta["in_channels"]), int(meta.get("image_size", 28)))
    probs = predict_probs(model, meta, x, device=args.device, tta=args.tta)
    names = meta.get("class_names") or [str(i) for i in range(probs.shape[1])]
    multilabel = str(meta.get("task", "")).startswith("multi-label")
    # "class"/"label": the most probable class (multi-label: the most probable label); multi-label rows add
    # "labels", every label with probability >= 0.5 (the threshold of the metrics)
    rows = [{"image": p, "class": int(pr.argmax()), "label": names[int(pr.argmax())],
             "probabilities": {names[i]: float(v) for i, v in enumerate(pr)}} for p, pr in zip(args.images, probs)]
    if multilabel:
        for r, pr in zip(rows, probs):
            r["labels"] = [names[i] for i in np.flatnonzero(pr >= 0.5)]
    if args.gradcam:
        from . import explain
        from .data import transforms as T
        xn = T.Normalize(meta["mean"], meta["std"])(x)
        # target: each image's reported class (with test-time flips, that of the averaged probabilities);
        # for a multi-label model its most probable label
        cams, t = explain.grad_cam(model, xn, layer=args.layer, target=probs.argmax(1))
        try:
            explain.save_overlays(x, cams, args.gradcam,
                                  titles=[f"{names[c]} {probs[i, c]:.2f}" for i, c in enumerate(t)])
        except OSError as exc:
            raise CLIError(f"--gradcam {args.gradcam}: cannot write the file ({exc.strerror or exc})") from exc
    if args.feature_maps:
        import os
        from . import tensor, viz
        from .data import transforms as T
        layer = args.layer or getattr(model, "cam_layer", None)
        if layer is None:
            raise CLIError("--feature-maps needs --layer: this model names no default layer")
        xn = T.Normalize(meta["mean"], meta["std"])(x)
        _output_folder("--feature-maps", args.feature_maps)
        os.makedirs(args.feature_maps, exist_ok=True)
        # an ensemble's members each have their own maps: show the first member's unless a member is named
        shown = model.members[0] if hasattr(model, "members") and not layer.startswith("members.") else model
        for i, p in enumerate(args.images):
            stem = os.path.splitext(os.path.basename(p))[0]
            viz.feature_maps(shown, tensor(xn[i:i + 1], device=args.device), layer,
                             path=os.path.join(args.feature_maps, f"{i:03d}_{stem}_{layer}.png"))
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            ps = "  ".join(f"{k}={v:.4f}" for k, v in r["probabilities"].items())
            if multilabel:
                found = ", ".join(r["labels"]) if r["labels"] else "no label"
                print(f"{r['image']}: {found} (p >= 0.5)  ({ps})")
            else:
                print(f"{r['image']}: {r['label']}  ({ps})")
        if args.gradcam:
            print(f"Grad-CAM overlays written to {args.gradcam}")
        if args.feature_maps:
            print(f"feature maps ({layer}) written to {args.feature_maps}")
    return 0


def cmd_summary(args):
    from .models import get_model
    from .summary import format_summary, parse_input_shape, summarize

    c, h, w = parse_input_shape(args.input)
    model = get_model(args.model, in_channels=c, num_classes=args.classes)
    try:
        s = summarize(model, (c, h, w))
    except ValueError as exc:  # e.g. an image too small for the model's pooling
        raise CLIError(f"--input {args.input}: model {args.model} cannot take a {c}x{h}x{w} input "
                       f"({_one_line(exc)})") from exc
    if args.json:
        print(json.dumps(s))
    else:
        print(format_summary(s, title=f"model {args.model} ({c}x{h}x{w} -> {args.classes} classes)"))
    return 0


def cmd_convert(args):
    from .data.convert import convert_paths

    window = None
    if args.window:
        try:
            window = tuple(float(v) for v in args.window.split(","))
        except ValueError:
            raise CLIError(f"--window must be CENTRE,WIDTH numbers, got {args.window!r}") from None
        if len(window) != 2:
            raise CLIError(f"--window must be CENTRE,WIDTH, got {args.window!r}")
    for p in args.inputs:
        if not os.path.exists(p):
            raise CLIError(f"input not found: {p}")
    _output_folder("--to", args.to)
    written = convert_paths(args.inputs, args.to, window=window, sidecar=args.sidecar)
    for w in written:
        _say(args, str(w))
    print(f"{len(written)} file(s) written to {args.to}")
    return 0


def cmd_bench(args):
    import importlib

    for modname in ("tinycnn.bench", "tinycnn.bench.runner", "benchmarks"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        fn = getattr(mod, "main", None)
        if callable(fn):
            argv = ["--out", args.out]
            for flag in ("quick", "no_torch", "no_plots", "quiet", "debug"):
                if getattr(args, flag, False):
                    argv.append("--" + flag.replace("_", "-"))
            for opt in ("only", "ops", "threads", "data_dir"):
                if getattr(args, opt, None) is not None:
                    argv += ["--" + opt.replace("_", "-"), str(getattr(args, opt))]
            return int(fn(argv) or 0)
    raise CLIError("the benchmark suite is not available in this installation "
                   "(no tinycnn.bench.main); run from a source checkout with benchmarks/")


COMMANDS = {"datasets": cmd_datasets, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "summary": cmd_summary, "convert": cmd_convert, "bench": cmd_bench}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return text


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # Numba's coloured error messages init colorama, which writes an ANSI reset to a terminal's stdout at exit
    os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
    try:
        if args.debug:
            return COMMANDS[args.command](args)
        import numpy as np
        # NumPy's floating-point RuntimeWarnings (e.g. from a diverging run) would add lines to stderr; the
        # errors they lead to are reported as one line below
        with np.errstate(all="ignore"):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" and getattr(args, "out", None):
            hint = f"; continue with: tinycnn train --out {args.out} --resume"
        print(f"tinycnn: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whoever read stdout stopped (`tinycnn datasets | head`): end quietly, as other command-line tools do;
        # stdout goes to /dev/null so that Python's final flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:  # every failure becomes one line unless --debug
        if args.debug:
            raise
        kind = type(exc).__name__
        prefix = "" if isinstance(exc, (CLIError, ValueError, FileNotFoundError)) else f"{kind}: "
        print(f"tinycnn: error: {prefix}{_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
