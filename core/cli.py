"""Command line: ``python -m core COMMAND … [--json]``.

With ``--json`` each command prints exactly one JSON object on stdout. Errors print one line on
stderr and exit with status 2 (bad input) or 1 (unexpected failure).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from core.errors import CoreError

COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


TORCHSCRIPT_EXT = (".pt", ".pth", ".ts")


def _model_arg(value: str) -> str:
    """``--model``: a shipped model's name, or a file: a trained model's weights beside its card, or a
    user TorchScript file (with ``--spec``)."""
    from core.models.registry import MODEL_NAMES

    if value in MODEL_NAMES or value.lower().endswith(TORCHSCRIPT_EXT):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a shipped model ({', '.join(MODEL_NAMES)}) nor a "
                                     f"TorchScript file ({', '.join(TORCHSCRIPT_EXT)}, with --spec)")


def _trained_into(path) -> bool:
    """Is ``path`` a model that ``train --out DIR`` wrote: ``DIR/NAME.pt`` with its card ``DIR/NAME.json``?"""
    from core.models.registry import MODEL_NAMES

    return path.suffix == ".pt" and path.stem in MODEL_NAMES and path.is_file() and path.with_suffix(".json").is_file()


def _load(name: str, device: str | None, spec_path: str | None = None):
    """``(model, spec)``: a shipped model by name; a model that ``train --out DIR`` wrote
    (``DIR/NAME.pt`` beside its card ``DIR/NAME.json``); or a user TorchScript file with its spec file
    (JSON/YAML: ``frames``, ``size``, ``classes``), as on the pages' "Upload TorchScript…"."""
    from pathlib import Path

    from core.errors import ModelError, ParameterError
    from core.models import load_model, load_torchscript, parse_spec, sha256_file
    from core.models.registry import MODEL_NAMES

    if name in MODEL_NAMES:
        if spec_path:
            raise ParameterError(f"--spec is for TorchScript files; {name!r} is a shipped model with its own card")
        return load_model(name, device)
    path = Path(name)
    if not path.is_file():
        raise ModelError(f"no TorchScript model file {name!r}")
    if _trained_into(path) and not spec_path:
        return load_model(path.stem, device, root=path.parent)  # written by `train --out DIR`, with its card
    if not spec_path:
        raise ParameterError(f"a TorchScript model needs --spec FILE (JSON or YAML with frames, size, classes): {name!r}")
    try:
        text = Path(spec_path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ModelError(f"cannot read the model spec {spec_path!r}: {e.strerror or e}") from None
    spec = parse_spec(text, path.stem)
    spec.card["sha256"] = sha256_file(path)  # results cached per weights, like the shipped models
    return load_torchscript(path, spec, device)


def _clf(name: str, device: str | None):
    from core.models import load_classifier

    return load_classifier(name, device)


@command("models")
def cmd_models(args: argparse.Namespace) -> dict:
    from core.models import available_models

    cards = available_models()
    return {"models": [{"name": c["name"], "architecture": c["architecture"], "classes": c["classes"],
                        "frames": c["input"]["frames"], "size": c["input"]["size"],
                        "test_accuracy": c["test_accuracy"], "sha256": c["sha256"]} for c in cards]}


@command("predict")
def cmd_predict(args: argparse.Namespace) -> dict:
    from core.inference import predict
    from core.video import open_video

    model, spec = _load(args.model, args.device, args.spec)
    video, info, true = open_video(args.video)
    out = predict(model, spec, video)
    out["video"] = info.to_dict()
    if true is not None:
        from core.data import CLASSES

        out["true_label"] = CLASSES[true]
    return out


@command("train")
def cmd_train(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from core.errors import ParameterError
    from core.models.train import train_model

    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    out = {"out_dir": Path(args.out)} if args.out else {}
    if args.recipe and not args.certified:
        raise ParameterError("--recipe is an option of --certified")
    if args.certified:
        from core.models.certtrain import certified_chain, certified_train

        if args.recipe == "shipped":
            given = [f"--{k.replace('_', '-')}" for k in ("threat", "radius", "flow_px", "steps", "init")
                     if getattr(args, k) is not None] + (["--orthant"] if args.orthant else [])
            if given:
                raise ParameterError(f"--recipe shipped fixes every stage's threat; drop {', '.join(given)}")
            return certified_chain(args.model, n_train=args.n_train, seed=args.seed, device=args.device,
                                   progress=log, **out)
        if args.init is not None:  # a clear error before the data is made
            from core.models.registry import MODEL_NAMES

            if args.init not in MODEL_NAMES and not _trained_into(Path(args.init)):
                raise ParameterError(f"--init must be a shipped model ({', '.join(MODEL_NAMES)}) or DIR/NAME.pt "
                                     f"that `train --out DIR` wrote (its card NAME.json beside it), got {args.init!r}")
        return certified_train(args.model, threat=args.threat or "box",
                               flow_px=0.05 if args.flow_px is None else args.flow_px,
                               radius=8.0 if args.radius is None else args.radius,
                               orthant=args.orthant, init=args.init, steps=args.steps, n_train=args.n_train, seed=args.seed,
                               device=args.device, progress=log, **out)
    return train_model(args.model, epochs=args.epochs, n_train=args.n_train, seed=args.seed,
                       device=args.device, progress=log, **out)


@command("flow")
def cmd_flow(args: argparse.Namespace) -> dict:
    import time

    import numpy as np

    from core.errors import ParameterError
    from core.flow import compute_flow
    from core.video import limit_size, open_video

    if args.eval:
        from core.flow.evaluate import evaluate_methods

        return evaluate_methods(args.methods.split(","), clips_per_class=args.clips_per_class)
    if not args.video:
        raise ParameterError("give a VIDEO (path or synthetic:<class>:<seed>) or --eval")
    video, info, _ = open_video(args.video)
    video = limit_size(video[: args.max_frames], args.max_side)
    t0 = time.perf_counter()
    flow = compute_flow(video, args.method).cpu()
    seconds = time.perf_counter() - t0
    mag = flow.norm(dim=1)
    out = {"method": args.method, "shape": list(flow.shape), "mean_magnitude": float(mag.mean()),
           "max_magnitude": float(mag.max()), "seconds": seconds}
    if args.out:
        np.save(args.out, flow.numpy())
        out["out"] = str(args.out)
    return out


@command("compare")
def cmd_compare(args: argparse.Namespace) -> dict:
    from core.metrics import distances
    from core.transforms import compose, parse

    ops = parse(args.transform)
    x = _read_image_or_video(args.path, args.max_frames)
    y = compose(x, ops, args.seed)
    d = distances(x, y)
    keys = ["ssim", "l1", "l2", "linf", "l1_mean", "l2_rms"] + (["l21", "l21_norm"] if x.dim() == 4 else [])
    out = {k: d[k] for k in keys}
    out.update({"transform": [[n, v] for n, v in ops], "shape": list(x.shape),
                "kind": "video" if x.dim() == 4 else "image"})
    return out


def _read_image_or_video(path: str, max_frames: int):
    """An image file → (3, H, W); a video (or synthetic:…) → (T, 3, H, W) (first ``max_frames``)."""
    from pathlib import Path

    from core.errors import VideoError
    from core.video import decode_image, open_video

    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"):
        if not Path(path).exists():
            raise VideoError(f"image file not found: {path}")
        return decode_image(Path(path).read_bytes(), str(path))
    video, _, _ = open_video(path)
    return video[:max_frames]


def _ints(text: str | None) -> list[int] | None:
    from core.errors import ParameterError

    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ParameterError(f"expected comma-separated integers, got {text!r}") from None


@command("msr")
def cmd_msr(args: argparse.Namespace) -> dict:
    from core.inference import prepare
    from core.msr import MSRParams
    from core.msr.run import run_msr
    from core.video import open_video, write_video

    model, spec = _load(args.model, args.device, args.spec)
    video, _, _ = open_video(args.video, spec.frames, spec.size)
    video = prepare(video, spec)
    params = MSRParams(metric=args.metric, tau=args.tau, budget=args.budget, flows=_ints(args.flows),
                       block=args.block, heuristic=args.heuristic, lipschitz=args.lipschitz,
                       max_iters=args.max_iters, time_limit=args.time_limit, space=args.space,
                       frames=_ints(args.frames), certify=not args.no_certify, node_probes=args.node_probes,
                       cert_method=args.cert_method)
    log = None if args.json else (lambda e: print(f"iter {e['iteration']:>4}  {e['seconds']:7.2f} s  "
                                                  f"lower {e['lower']:.4f}  upper {e['upper']:.4f}"))
    from core.classifier import VideoClassifier

    result, witness = run_msr(VideoClassifier(model, spec), spec, video, params, on_event=log,
                              use_cache=not args.no_cache)
    if args.save_witness:
        if witness is None:
            result["saved_witness"] = None
        else:
            write_video(args.save_witness, witness, fps=8, scale=4)
            result["saved_witness"] = str(args.save_witness)
    return result


def _attack_kwargs(args: argparse.Namespace) -> dict:
    kw: dict = {}
    if args.method == "deepsava":
        kw.update(mode=args.mode, max_iters=args.max_iters, bo_trials=args.bo_trials, seed=args.seed,
                  ssim_scope=args.ssim_scope)
        if args.ssim_budget is not None:
            kw["ssim_budget"] = args.ssim_budget or None  # 0 = no budget
        if args.l21_budget is not None:
            kw["l21_budget"] = args.l21_budget
        if args.lam is not None:
            kw["lam"] = args.lam
    elif args.method in ("sparse", "flicker"):
        kw["max_iters"] = args.max_iters
        if args.lam is not None:
            kw["lam"] = args.lam
        if args.l21_budget is not None:
            kw["l21_budget"] = args.l21_budget
        if args.ssim_budget:
            kw.update(ssim_budget=args.ssim_budget, ssim_scope=args.ssim_scope)
    if args.mask is not None:
        kw["mask"] = _ints(args.mask)
    return kw


def _fitted_clip(args: argparse.Namespace):
    """``(model, spec, video fitted to the model's input, true label or None)`` for ``args.model``
    and ``args.video`` — what attack, compress and saliency start from."""
    from core.inference import prepare
    from core.video import open_video

    model, spec = _load(args.model, args.device, args.spec)
    video, _, true = open_video(args.video, spec.frames, spec.size)
    return model, spec, prepare(video, spec), true


@command("attack")
def cmd_attack(args: argparse.Namespace) -> dict:
    from core.attacks import make_attack
    from core.video import write_video

    model, spec, video, true = _fitted_clip(args)
    bb = _load(args.black_box, args.device)[0] if args.black_box else None
    atk = make_attack(args.method, model, eps=args.eps, frames=args.frames, select=args.select,
                      classes=spec.classes, success_model=bb, **_attack_kwargs(args))
    res = atk(video, true if args.use_true_label and true is not None else None)
    out = res.to_dict(flow=True)
    out.update({"model": args.model, "black_box": args.black_box})
    if args.save:
        write_video(args.save, res.adv_video, fps=8, scale=4)
        out["saved"] = str(args.save)
    return out


def _full_attack_kwargs(args: argparse.Namespace) -> dict:
    """``make_attack`` keyword arguments from the shared attack options (JSON-serialisable)."""
    kw = _attack_kwargs(args)
    if args.method in ("one-shot", "saliency", "saliency-rg"):
        kw["eps"] = args.eps
    else:
        kw.update(frames=args.frames)
        if args.method == "deepsava":
            kw["select"] = args.select
    return kw


def _names(text: str, what: str) -> list[str]:
    from core.errors import ParameterError
    from core.models.registry import MODEL_NAMES

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in MODEL_NAMES]
    if not names or bad:
        raise ParameterError(f"--{what} must name shipped models ({', '.join(MODEL_NAMES)}), got {text!r}")
    return names


@command("transfer")
def cmd_transfer(args: argparse.Namespace) -> dict:
    from core.experiments.transfer import transfer_matrix

    log = None if args.json else (lambda f, s: print(f"{f:6.1%}  {s}", flush=True))
    out = transfer_matrix(_names(args.sources, "sources"), _names(args.targets, "targets"), args.method,
                          clips=args.clips, attack_kw=_full_attack_kwargs(args), engine=args.engine,
                          workers=args.workers, address=args.address, progress=log)
    if not args.json:
        width = max(14, *(len(t) for t in out["targets"])) + 2
        print("FR (fooled/n)  rows: source, columns: target")
        print(" " * 26 + "".join(t.rjust(width) for t in out["targets"]))
        for s, fr, k, n in zip(out["sources"], out["fr"], out["fooled"], out["n"]):
            cells = "".join((f"{f:.2f} ({a}/{b})" if f is not None else "—").rjust(width) for f, a, b in zip(fr, k, n))
            print(s.ljust(26) + cells)
    return out


@command("compress")
def cmd_compress(args: argparse.Namespace) -> dict:
    from core.errors import ParameterError
    from core.experiments.compression import compression_survival

    model, spec, video, true = _fitted_clip(args)
    label = true if true is not None else model.predict(video)[0]
    text = args.crf if args.codec == "h264" else args.quality
    try:
        levels = [float(v) for v in text.split(",")] if text else None
    except ValueError:
        raise ParameterError(f"levels must be comma-separated numbers, got {text!r}") from None
    out = compression_survival(model, video, label, args.method, args.codec, levels, _full_attack_kwargs(args))
    out["model"] = args.model
    return out


@command("saliency")
def cmd_saliency(args: argparse.Namespace) -> dict:
    import numpy as np

    from core.errors import ParameterError
    from core.experiments.saliency import saliency_maps

    model, spec, video, true = _fitted_clip(args)
    label = None
    if args.label is not None:
        if args.label in spec.classes:
            label = spec.classes.index(args.label)
        elif args.label.isdigit() and int(args.label) < len(spec.classes):
            label = int(args.label)
        else:
            raise ParameterError(f"--label must be a class name or an index < {len(spec.classes)}, got {args.label!r}")
    res = saliency_maps(model, video, label, args.smoothgrad, args.sigma)
    out = {"model": args.model, "label": res["label"], "class": spec.classes[res["label"]],
           "true_label": None if true is None else spec.classes[true], "shape": list(res["maps"].shape),
           "per_frame": res["per_frame"].tolist(), "smoothgrad": res["smoothgrad"], "sigma": res["sigma"]}
    if args.out:
        np.save(args.out, res["maps"].numpy().astype(np.float32))
        out["saved"] = str(args.out)
    return out


@command("advtrain")
def cmd_advtrain(args: argparse.Namespace) -> dict:
    from core.models.advtrain import adversarial_train

    return adversarial_train(args.model, args.method, eps=args.eps, steps=args.steps, epochs=args.epochs,
                             flow_eps=args.flow_eps, n_train=args.n_train, seed=args.seed, device=args.device,
                             progress=None if args.json else print, resume=not args.restart)


@command("robust")
def cmd_robust(args: argparse.Namespace) -> dict:
    from core.experiments.robust import robust_table

    attacks = {}
    for m in [a.strip() for a in args.methods.split(",") if a.strip()]:
        attacks[m] = ({"eps": args.eps} if m in ("one-shot", "saliency", "saliency-rg") else
                      {"frames": 1, "max_iters": args.max_iters, **({"select": args.select} if m == "deepsava" else {})})
    log = None if args.json else (lambda f, s: print(f"{f:6.1%}  {s}", flush=True))
    out = robust_table(_names(args.models, "models"), attacks, clips=args.clips, engine=args.engine,
                       workers=args.workers, progress=log)
    if not args.json:
        print(f"{'model':22s} {'attack':12s} {'clean':>7s} {'robust':>7s}   n")
        for r in out["rows"]:
            print(f"{r['model']:22s} {r['attack']:12s} {r['clean_accuracy']:7.3f} {r['robust_accuracy']:7.3f} {r['n']:3d}")
    return out


@command("msrset")
def cmd_msrset(args: argparse.Namespace) -> dict:
    from core.experiments.msr_set import msr_over_clips

    params = {"metric": args.metric, "tau": args.tau, "budget": args.budget, "flows": _ints(args.flows),
              "block": args.block, "max_iters": args.max_iters, "time_limit": args.time_limit,
              "certify": not args.no_certify}
    log = None if args.json else (lambda f, s: print(f"{f:6.1%}  {s}", flush=True))
    out = msr_over_clips(_names(args.model, "models"), args.clips, params, engine=args.engine, workers=args.workers,
                         address=args.address, progress=log)
    if not args.json:
        for r in out["rows"]:
            print(f"{r['model']:20s} clip {r['clip']:3d} {r['label']:16s} " + "  ".join(
                f"{b['name']} {b['value']:.4g} ({b['guarantee']})" for b in r["bounds"]))
        for s in out["summary"]:
            if s["ratio_median"] is not None:
                print(f"{s['model']:20s} {s['correct']}/{s['clips']} correct; over the {s['compared']} clips every "
                      f"model gets right: certified lower / upper median {s['ratio_median']:.1%} "
                      f"({s['ratio_min']:.1%}–{s['ratio_max']:.1%}), {s['ratio_at_goal']} at ≥ {s['goal']:.0%}")
    return out


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> dict:
    from core.attacks.sweep import sweep, sweep_jobs
    from core.errors import ParameterError

    log = None if args.json else (lambda f, s: print(f"{f:6.1%}  {s}"))
    try:
        eps = [float(e) for e in args.eps.split(",")]
    except ValueError:
        raise ParameterError(f"--eps must be comma-separated numbers, got {args.eps!r}") from None
    if args.engine != "inprocess":  # one job task per (model, attack, ε, clip): Ray or serial, cached
        return sweep_jobs(_names(args.models, "models"), args.methods.split(","), n_clips=args.clips, eps_values=eps,
                          frames=args.frames, select=args.select, black_box=args.black_box, engine=args.engine,
                          workers=args.workers, address=args.address, progress=log)
    models = {m: _load(m, args.device) for m in args.models.split(",")}
    bb = _load(args.black_box, args.device) if args.black_box else None
    return sweep(models, args.methods.split(","), n_clips=args.clips, eps_values=eps, frames=args.frames,
                 select=args.select, black_box=bb, progress=log)


@command("panels")
def cmd_panels(args: argparse.Namespace) -> dict:
    """Wu & Kwiatkowska Fig. 8 (brightness) or Fig. 10 (scalability) lower-bound traces."""
    from core.classifier import VideoClassifier
    from core.inference import prepare
    from core.msr.experiments import brightness_panel, scalability_panel
    from core.video import open_video

    model, spec = _load(args.model, args.device, args.spec)
    video, _, _ = open_video(args.video, spec.frames, spec.size)
    video = prepare(video, spec)
    clf = VideoClassifier(model, spec)
    if args.panel == "brightness":
        tr = brightness_panel(clf, video, iters=args.iters)
    else:
        tr = scalability_panel(clf, video, args.metric, args.tau, args.budget, args.block, iters=args.iters)
    return {"panel": args.panel, "guarantee": "grid", "traces": {k: [{"iteration": e["iteration"],
            "lower": e["lower"]} for e in v] for k, v in tr.items()}}


@command("certify")
def cmd_certify(args: argparse.Namespace) -> dict:
    """Sound certified lower bound on the continuous MSR of a flow space (core.verify)."""
    import time

    from core.classifier import VideoClassifier
    from core.errors import ParameterError
    from core.inference import prepare
    from core.msr.space import FlowSpace
    from core.verify import CertifiedRadius, Unsupported, certify, supported
    from core.video import open_video

    model, spec = _load(args.model, args.device, args.spec)
    clf = VideoClassifier(model, spec)
    why = supported(clf)
    if why:
        raise Unsupported(f"{args.model} cannot be certified: {why}")
    video, _, _ = open_video(args.video, spec.frames, spec.size)
    video = prepare(video, spec)
    flows = _ints(args.flows) or list(range(video.shape[0] - 1))
    space = FlowSpace(video.to(clf.device), flows, args.block)
    info = {"space": {"flows": space.flows, "block": space.block, "dims": space.dims}, "model": args.model,
            "metric": args.metric, "method": args.method}
    if args.radius is not None:
        out = certify(clf, video, space, args.radius, args.metric, args.method, diagnose=args.diagnose)
        return {**info, "method": out["method"], "certified": out["certified"], "margin_lower": out["margin_lower"],
                "radius": args.radius, "guarantee": "sound", "seconds": out["seconds"],
                **{k: out[k] for k in ("bounds", "diagnosis") if k in out}}
    if args.diagnose:
        raise ParameterError("--diagnose needs --radius (it explains one probe)")
    t0 = time.perf_counter()
    cr = CertifiedRadius(clf, space, args.metric, args.method)
    log = None if args.json else (lambda r: print(f"{r['seconds']:7.2f} s  certified lower {r['certified_lower']:.5g}"))
    res = cr.run(args.time_limit, callback=log)
    return {**info, "method": res["method"], "certified_lower": res["certified_lower"], "guarantee": "sound",
            "seconds": time.perf_counter() - t0, "trace": res["trace"], "boxes": res["boxes"]}


@command("bench")
def cmd_bench(args: argparse.Namespace) -> dict:
    from core.bench import run_bench

    return run_bench(args.target, quick=args.quick, echo=not args.json)


def _add_model_args(p: argparse.ArgumentParser, default: str, names: list[str]) -> None:
    """``--model NAME|FILE`` and ``--spec FILE``, for the commands that run one model on one clip."""
    p.add_argument("--model", default=default, type=_model_arg, metavar="NAME|FILE",
                   help=f"a shipped model ({', '.join(names)}; default {default}), a model that `train --out "
                        f"DIR` wrote (DIR/NAME.pt), or your TorchScript file ({', '.join(TORCHSCRIPT_EXT)}) with --spec")
    p.add_argument("--spec", default=None, metavar="FILE",
                   help="with a TorchScript --model: its spec, JSON or YAML with frames, size and classes "
                        "(the model maps (B, frames, 3, size, size) in [0, 1] to logits (B, classes))")


def _add_attack_args(p: argparse.ArgumentParser) -> None:
    """The attack parameters shared by ``attack``, ``transfer`` and ``compress``."""
    from core.attacks import METHODS as ATTACKS

    p.add_argument("--method", required=True, choices=ATTACKS)
    p.add_argument("--eps", type=float, default=0.01, help="one-shot / saliency step ε")
    p.add_argument("--frames", type=int, default=1, help="sparse attacks: frames to perturb (K)")
    p.add_argument("--select", default="bo", choices=["bo", "random", "brute", "first"], help="DeepSAVA key frames")
    p.add_argument("--mask", default=None, help="fixed key frames, e.g. 3,9 (sparse attacks)")
    p.add_argument("--ssim-scope", default="frame", choices=["frame", "video"],
                   help="SSIM budget on every perturbed frame (default) or on the whole clip (DeepSAVA's)")
    p.add_argument("--mode", default="both", choices=["both", "additive", "spatial"], help="DeepSAVA ablation")
    p.add_argument("--max-iters", type=int, default=100)
    p.add_argument("--bo-trials", type=int, default=8)
    p.add_argument("--lam", type=float, default=None, help="λ (DeepSAVA SSIM weight, Sparse/Flicker norm weight)")
    p.add_argument("--ssim-budget", type=float, default=None, help="SSIM >= b (DeepSAVA default 0.98; 0 = none)")
    p.add_argument("--l21-budget", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    from core.flow import METHODS
    from core.models.registry import DEFAULT_MODEL, MODEL_NAMES
    from core.verify.certify import METHODS as CERT_METHODS

    p = _Parser(prog="python -m core", description="Video-robustness toolkit (headless).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
        return sp

    add("models", "list shipped models")
    sp = add("predict", "classify a video")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp = add("train", "train a shipped model from scratch and write assets/models/NAME.{pt,json}")
    sp.add_argument("--model", required=True, choices=MODEL_NAMES)
    sp.add_argument("--epochs", type=int, default=None)
    sp.add_argument("--n-train", type=int, default=1600)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default=None, metavar="DIR",
                    help="write NAME.pt and its card NAME.json here instead of assets/models (then load it with "
                         "--model DIR/NAME.pt)")
    sp.add_argument("--certified", action="store_true",
                    help="certified training against flow manipulations (writes NAME_certified; resumable)")
    sp.add_argument("--recipe", default=None, choices=["shipped"],
                    help="with --certified: shipped = the whole chain that made the shipped cnn_lstm_certified (a "
                         "box run, then ball runs at ℓ2 8, 12, 12, 12, each from the one before; ≈ 2.9 h on 1 core; "
                         "resumable stage by stage)")
    sp.add_argument("--threat", default=None, choices=["box", "ball"],
                    help="with --certified: box (default; the shipped model's first step) = shifts ≤ --flow-px of "
                         "every pixel (IBP); ball (its later steps) = the ℓ2 ball of 16-px block shifts of every "
                         "flow (sketched zonotope bounds, recurrent matrix held at 0)")
    sp.add_argument("--radius", type=float, default=None,
                    help="with --threat ball: the ball's radius (flow distance; default 8)")
    sp.add_argument("--init", default=None, metavar="NAME|DIR/NAME.pt",
                    help="with --certified: weights to start from, shipped or written by `train --out DIR` "
                         "(default: the regular --model)")
    sp.add_argument("--orthant", action="store_true",
                    help="with --threat ball: bound each clip over the orthant of block shifts in which its loss "
                         "rises fastest (the warp is linear there) instead of sketching the warp's kinks apart")
    sp.add_argument("--flow-px", type=float, default=None, help="with --threat box: the shift bound κ in pixels "
                                                                 "(default 0.05)")
    sp.add_argument("--steps", type=int, default=None,
                    help="with --certified: training steps (default 3000 for box, batches of 16; 800 for ball, of 8)")
    sp = add("flow", "optical flow of a video, or --eval for EPE of every method")
    sp.add_argument("video", nargs="?", help="a video path or synthetic:<class>:<seed>")
    sp.add_argument("--method", default="farneback", choices=METHODS)
    sp.add_argument("--out", default=None, help="save the flow (T-1, 2, H, W) as .npy")
    sp.add_argument("--max-side", type=int, default=256, help="downscale so the longer side is <= this")
    sp.add_argument("--max-frames", type=int, default=64, help="use at most the first N frames")
    sp.add_argument("--eval", action="store_true", help="EPE per method on seeded synthetic test clips")
    sp.add_argument("--methods", default=",".join(METHODS), help="with --eval: comma-separated methods")
    sp.add_argument("--clips-per-class", type=int, default=2)
    sp = add("compare", "SSIM and Lp distances between an image/video and a transformed copy")
    sp.add_argument("path", help="an image, a video, or synthetic:<class>:<seed>")
    sp.add_argument("--transform", required=True, help="e.g. rotate=5,zoom=0.95,noise=0.02 (left to right)")
    sp.add_argument("--seed", type=int, default=0, help="noise seed")
    sp.add_argument("--max-frames", type=int, default=64)
    sp = add("msr", "converging bounds of the maximum safe radius w.r.t. optical flow")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp.add_argument("--metric", default="l2", choices=["l1", "l2", "linf"])
    sp.add_argument("--tau", type=float, default=0.5, help="grid step τ (pixels of flow)")
    sp.add_argument("--budget", type=float, default=300.0, help="ball radius d")
    sp.add_argument("--flows", default=None, help="frame pairs Player I may manipulate, e.g. 3,7 (default: all)")
    sp.add_argument("--block", type=int, default=16, help="pixels per block side (1 = per pixel)")
    sp.add_argument("--heuristic", default="zero", choices=["zero", "lipschitz", "certified"])
    sp.add_argument("--lipschitz", type=float, default=None, help="Lipschitz constant L of the margin")
    sp.add_argument("--node-probes", type=int, default=0,
                    help="certified heuristic: bound-propagation probes per A* batch, each certifying a "
                         "radius around one node (default 0: the clip's certified radius only)")
    sp.add_argument("--cert-method", default="crown+", choices=CERT_METHODS,
                    help="bound propagation of the certified lower bound (see `certify --method`)")
    sp.add_argument("--max-iters", type=int, default=300)
    sp.add_argument("--time-limit", type=float, default=60.0, help="seconds")
    sp.add_argument("--space", default="flow", choices=["flow", "brightness"])
    sp.add_argument("--frames", default=None, help="brightness: frames to change (default: all)")
    sp.add_argument("--save-witness", default=None, help="write the adversarial video (H.264 mp4)")
    sp.add_argument("--no-cache", action="store_true", help="recompute even if a cached result exists")
    sp.add_argument("--no-certify", action="store_true", help="skip the sound certified lower bound")
    sp = add("panels", "Fig. 8 (brightness) or Fig. 10 (scalability) lower-bound traces")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp.add_argument("--panel", required=True, choices=["brightness", "scalability"])
    sp.add_argument("--iters", type=int, default=40)
    sp.add_argument("--metric", default="l2", choices=["l1", "l2", "linf"])
    sp.add_argument("--tau", type=float, default=0.5)
    sp.add_argument("--budget", type=float, default=300.0)
    sp.add_argument("--block", type=int, default=16)
    sp = add("certify", "sound certified lower bound on the flow MSR (bound propagation, branch and bound)")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp.add_argument("--metric", default="l2", choices=["l1", "l2", "linf"])
    sp.add_argument("--flows", default=None, help="frame pairs, e.g. 7 or 3,7 (default: all)")
    sp.add_argument("--block", type=int, default=16, help="pixels per block side")
    sp.add_argument("--radius", type=float, default=None, help="certify this radius only")
    sp.add_argument("--diagnose", action="store_true",
                    help="with --radius: each relaxation's margin bound, and per perturbed step the unstable "
                         "ReLUs of every layer and the width of the feature box (where the bound loses)")
    sp.add_argument("--time-limit", type=float, default=60.0, help="seconds (anytime search)")
    sp.add_argument("--method", default="crown+", choices=CERT_METHODS,
                    help="crown+ (default): linear intermediate bounds for every ReLU of the CNN, carried "
                         "forward in each step's flow variables, then crown++ once located; crown: CROWN with "
                         "interval intermediate bounds until its first failed radius, then crown+ (looser, and "
                         "no faster on many flows); crown++: crown+, then back-substitution for the unstable "
                         "neurons of the deeper ReLUs (tighter, slower per probe); alpha: α-CROWN, optimised "
                         "ReLU lower slopes (10 Adam steps, ~10-40× slower); ibp: intervals")
    from core.attacks import METHODS as ATTACKS

    sp = add("attack", "run one attack on one clip")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    _add_attack_args(sp)
    sp.add_argument("--black-box", default=None, choices=MODEL_NAMES, help="judge success on this model")
    sp.add_argument("--use-true-label", action="store_true", help="attack the true class of a synthetic clip")
    sp.add_argument("--save", default=None, help="write the adversarial video (H.264 mp4)")
    sp = add("sweep", "attack seeded test clips: FR, ANI, AAP, ASP tables")
    sp.add_argument("--models", default=DEFAULT_MODEL, help="comma-separated model names")
    sp.add_argument("--methods", default="one-shot,saliency,saliency-rg", help="comma-separated attacks")
    sp.add_argument("--eps", default="0.01", help="comma-separated ε values (Inkawhich attacks)")
    sp.add_argument("--clips", type=int, default=8)
    sp.add_argument("--frames", type=int, default=1)
    sp.add_argument("--select", default="first", choices=["bo", "random", "brute", "first"])
    sp.add_argument("--black-box", default=None, choices=MODEL_NAMES)
    sp.add_argument("--engine", default="auto", choices=["auto", "ray", "serial", "inprocess"],
                    help="auto: one task per clip on an embedded local Ray (serial without Ray); inprocess: "
                         "one loop here, no task cache")
    sp.add_argument("--workers", type=int, default=2, help="Ray workers (local Ray)")
    sp.add_argument("--address", default=None, help="join a Ray cluster (ray://host:port; default $RAY_ADDRESS)")
    sp = add("transfer", "transferability matrix: attacks crafted on each source model, judged on every target")
    sp.add_argument("--sources", required=True, help="comma-separated shipped models")
    sp.add_argument("--targets", required=True, help="comma-separated shipped models (black-box flow models too)")
    sp.add_argument("--clips", type=int, default=16, help="synthetic test clips")
    sp.add_argument("--engine", default="auto", choices=["auto", "ray", "serial"],
                    help="auto: an embedded local Ray when installed, else serial")
    sp.add_argument("--workers", type=int, default=2, help="Ray workers (local Ray)")
    sp.add_argument("--address", default=None, help="join a Ray cluster (ray://host:port; default $RAY_ADDRESS)")
    _add_attack_args(sp)
    sp = add("compress", "do adversarial perturbations survive H.264 / JPEG compression? (DeepSAVA §4.2.3)")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp.add_argument("--codec", default="h264", choices=["h264", "jpeg"])
    sp.add_argument("--crf", default="18,23,28", help="H.264 CRF levels (larger = stronger)")
    sp.add_argument("--quality", default="95,75,50", help="JPEG quality levels (smaller = stronger)")
    _add_attack_args(sp)
    sp = add("advtrain", "adversarially train a shipped model (PGD-AT or DeepSAVA-AT, fine-tuned; resumable) "
                         "into assets/models")
    sp.add_argument("--model", default="cnn_lstm", choices=["cnn_lstm", "cnn_gru", "cnn_rnn", "c3d", "frame_cnn"])
    sp.add_argument("--method", default="pgd", choices=["pgd", "deepsava"],
                    help="pgd: Alg. 3 (pixel ℓ∞); deepsava: Alg. 4 (flow + noise on one key frame)")
    sp.add_argument("--eps", type=float, default=None, help="pixel ℓ∞ radius (default 0.01 pgd, 0.03 deepsava)")
    sp.add_argument("--flow-eps", type=float, default=1.0, help="deepsava: flow bound in pixels")
    sp.add_argument("--steps", type=int, default=3, help="PGD steps in training")
    sp.add_argument("--epochs", type=int, default=4)
    sp.add_argument("--n-train", type=int, default=1600)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--restart", action="store_true", help="ignore a checkpoint and start over")
    sp = add("robust", "clean vs robust accuracy of models under attacks (DeepSAVA Tab. 11)")
    sp.add_argument("--models", default="cnn_lstm,cnn_lstm_pgd_at")
    sp.add_argument("--methods", default="one-shot,saliency-rg,deepsava")
    sp.add_argument("--eps", type=float, default=0.01, help="ε of the Inkawhich attacks")
    sp.add_argument("--max-iters", type=int, default=40, help="iterations of the sparse attacks")
    sp.add_argument("--select", default="first", choices=["first", "bo", "random", "brute"],
                    help="DeepSAVA key frame: first (Mu et al. §4.3) or a search")
    sp.add_argument("--clips", type=int, default=16)
    sp.add_argument("--engine", default="auto", choices=["auto", "ray", "serial"])
    sp.add_argument("--workers", type=int, default=2)
    sp = add("msrset", "MSR bounds over the first N test clips, one job task per clip (Ray or serial)")
    sp.add_argument("--model", default=DEFAULT_MODEL,
                    help="a model, or several side by side: e.g. cnn_lstm,cnn_lstm_certified")
    sp.add_argument("--clips", type=int, default=4)
    sp.add_argument("--metric", default="l2", choices=["l1", "l2", "linf"])
    sp.add_argument("--tau", type=float, default=0.5)
    sp.add_argument("--budget", type=float, default=300.0)
    sp.add_argument("--flows", default=None, help="frame pairs, e.g. 7 or 3,7 (default: all)")
    sp.add_argument("--block", type=int, default=16)
    sp.add_argument("--max-iters", type=int, default=50)
    sp.add_argument("--time-limit", type=float, default=600.0, help="seconds per clip (keep it non-binding)")
    sp.add_argument("--no-certify", action="store_true")
    sp.add_argument("--engine", default="auto", choices=["auto", "ray", "serial"])
    sp.add_argument("--workers", type=int, default=2)
    sp.add_argument("--address", default=None, help="join a Ray cluster (ray://host:port; default $RAY_ADDRESS)")
    sp = add("saliency", "input-gradient saliency maps per frame (SmoothGrad optional)")
    sp.add_argument("video", help="a video path or synthetic:<class>:<seed>")
    _add_model_args(sp, DEFAULT_MODEL, MODEL_NAMES)
    sp.add_argument("--label", default=None, help="class (name or index) to explain; default: the predicted one")
    sp.add_argument("--smoothgrad", type=int, default=0, help="noisy samples (0 = plain gradient)")
    sp.add_argument("--sigma", type=float, default=0.1, help="SmoothGrad noise σ")
    sp.add_argument("--out", default=None, help="save the maps (T, H, W) float32 as .npy")
    sp = add("bench", "speed benchmarks, measured side by side in one run")
    sp.add_argument("target", choices=["flow", "msr", "attacks", "keyframes", "certify", "ray"])
    sp.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")
    return p


def _print_human(obj: dict) -> None:
    from core.jsonutil import dumps

    for k, v in obj.items():
        if isinstance(v, (dict, list)):
            v = dumps(v)
        print(f"{k}: {v}")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``error: …``) and exit status 2, like every other user error."""

    def error(self, message: str):  # noqa: D401
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def choose_threads() -> int:
    """Torch threads on this machine: one per core up to 4, and 1 on a machine with ≤ 2 cores —
    measured on a loaded 2-core box, 2 threads ran Horn–Schunck 10–25× slower than 1 (README).
    ``VRD_THREADS`` overrides."""
    import os

    import torch

    env = os.environ.get("VRD_THREADS")
    cores = os.cpu_count() or 1
    n = int(env) if env and env.isdigit() and int(env) > 0 else (1 if cores <= 2 else min(4, cores))
    torch.set_num_threads(n)
    return n


def main(argv: list[str] | None = None) -> int:
    from core.jsonutil import dumps

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        choose_threads()
        result = COMMANDS[args.command](args)
    except CoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, not a traceback, for users
        from core.verify import Unsupported

        if isinstance(e, Unsupported):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(dumps(result))
    elif args.command != "bench":  # benchmarks print their own table
        _print_human(result)
    return 0
