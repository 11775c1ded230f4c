"""`avae reproduce transformer-vae`: the experiments of Vivé (2017) on the Transformer VAEs.

Experiments are configurations (:class:`TransformerPreset`); every preset runs the same code. The
models an experiment needs are named by :class:`ModelSpec` (kind, content latent size, prior on u),
trained once into ``OUT/models/NAME`` by the one training loop and reused when the command runs
again. Each experiment is a function of trained models and data that returns tidy rows:

1. reconstruction error vs total latent size dim z + dim u (thesis Fig. 5), with how far from
   converged each of its models is (validation error over the epochs);
2. linear SVMs on the latent means, cross-validated on the training digits and tested on the test
   set, against raw pixels and PCA (Table 1);
3. importance-sampled log-likelihood against the ELBO (section VI.i);
4. the pose a model gives the training digits on average, where samples are posed (Figs. 6, 7, 9).
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from avae.attacks import accuracy
from avae.data import reproduction_splits
from avae.errors import AvaeError
from avae.io import write_json
from avae.models.transformer_vae import importance_sampled_bounds, make_transformer
from avae.report.figures import image_rows
from avae.report.provenance import provenance
from avae.report.tables import write_csv
from avae.report.transformer import SAMPLE_GRID, latent_scatter, panel_grid, panels
from avae.train.loop import TrainConfig, fit, mean_and_sem, per_image_loss
from avae.train.parallel import finished, fit_in_processes

# Thesis Table 1, all eleven rows: linear-SVM test accuracy (%) on raw pixels, PCA components and the
# latent means (models trained on MNIST's training digits: 60,000 is our reading, the copy of the thesis we
# have is cut before its data section)
THESIS_TABLE1 = {("raw pixels", "-"): 91.80,
                 ("PCA", 8): 75.51, ("VAE", 8): 87.99, ("affine TVAE", 8): 88.39, ("TPS TVAE", 8): 88.65,
                 ("affine DTVAE", 8): 93.87,
                 ("PCA", 20): 86.52, ("VAE", 20): 86.45, ("affine TVAE", 20): 90.51, ("TPS TVAE", 20): 94.48,
                 ("affine DTVAE", 20): 94.17}

# kind -> (label, registered model, fixed config fields); every model is the thesis's: dense nets
# of two hidden layers of 256 ReLU units, Bernoulli likelihood, 28x28 digits.
KINDS = {
    "vae": ("VAE", "vae", {"net": "mlp", "likelihood": "bernoulli", "image_size": 28}),
    "tvae-affine": ("affine TVAE", "tvae", {"transformer": "affine"}),
    "tvae-affine5": ("5-dof TVAE", "tvae", {"transformer": "affine5"}),
    "tvae-tps": ("TPS TVAE", "tvae", {"transformer": "tps"}),
    "dtvae-affine": ("affine DTVAE", "dtvae", {"transformer": "affine"}),
}
MAIN_KINDS = ("vae", "tvae-affine", "tvae-tps", "dtvae-affine")  # Fig. 5 and Table 1
# Fig. 5's curves, (kind, prior on u): the main models without a prior on u, and the affine TVAE also
# with the thesis's diagonal prior (eq. 7), which reconstructs better than without one at z = 8
FIG5_SERIES = (("vae", "none"), ("tvae-affine", "none"), ("tvae-affine", "diagonal"), ("tvae-tps", "none"),
               ("dtvae-affine", "none"))
PRIOR_LABELS = {"none": "none (u deterministic)", "diagonal": "diagonal normal, learned mean and variance",
                "identity": "diagonal normal centred on the identity, learned variance (the thesis's Fig. 10)",
                "full": "full covariance (u' = W u + b)"}


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    latent: int  # dimension of z
    prior: str = "none"  # prior on u (transformer models)
    # which training run of this model: replicate k is trained with seed + k (same data and split)
    replicate: int = 0
    rank: int = 0  # prior "full": dimension of u (0: the transformer's degrees of freedom, maximum rank)
    optimizer: str = "adam"  # avae.train.TrainConfig.optimizer: adam (ours) or adadelta (the thesis's)

    @classmethod
    def parse(cls, text: str, replicate: int = 0) -> ModelSpec:
        """``KIND:Z[:PRIOR[:RANK]]`` (as the experiment scripts take them), e.g. ``tvae-affine:8:diagonal``
        or ``tvae-tps:8:full:4``."""
        kind, _, rest = text.partition(":")
        latent, _, rest = rest.partition(":")
        prior, _, rank = rest.partition(":")
        if (kind not in KINDS or not latent.isdigit() or (prior or "none") not in PRIOR_LABELS
                or (rank and (not rank.isdigit() or prior != "full"))):
            raise AvaeError(f"model {text!r}: expected KIND:Z[:PRIOR[:RANK]] with KIND one of {', '.join(KINDS)}, Z a "
                            f"positive integer, PRIOR one of {', '.join(PRIOR_LABELS)} and RANK (prior full only) "
                            "a positive integer")
        return cls(kind, int(latent), prior or "none", replicate, int(rank or 0))

    @property
    def name(self) -> str:
        return (f"{self.kind}-z{self.latent}" + ("" if self.prior == "none" else f"-{self.prior}")
                + (f"-r{self.rank}" if self.rank else "")
                + ("" if self.optimizer == "adam" else f"-{self.optimizer}")
                + (f"-rep{self.replicate}" if self.replicate else ""))

    @property
    def label(self) -> str:
        text = f"{KINDS[self.kind][0]} (z={self.latent})"
        if self.kind != "vae" and self.prior != "none":
            text += f", {self.prior} prior" + (f" of rank {self.rank}" if self.rank else "")
        return text + ("" if self.optimizer == "adam" else f", {self.optimizer.capitalize()}")

    @property
    def series(self) -> str:
        """The model's curve in Fig. 5: its kind and prior on u, without z."""
        text = KINDS[self.kind][0]
        return text if self.kind == "vae" or self.prior == "none" else f"{text}, {self.prior} prior"

    @property
    def model(self) -> str:
        return KINDS[self.kind][1]

    @property
    def pose_dof(self) -> int:
        config = KINDS[self.kind][2]
        return make_transformer(config["transformer"]).dof if "transformer" in config else 0

    @property
    def total(self) -> int:
        return self.latent + self.pose_dof

    def config(self) -> dict:
        extra = {} if self.kind == "vae" else {"prior": self.prior}
        if self.rank:
            extra["rank"] = self.rank
        return {"latent": self.latent, **KINDS[self.kind][2], **extra}


@dataclass(frozen=True)
class TransformerPreset:
    name: str
    train_images: int | None  # training digits (None: all 4,500 embedded training digits)
    epochs: int
    totals: tuple[int, ...]  # Fig. 5: total latent sizes dim z + dim u
    svm_latents: tuple[int, ...]  # Table 1: dimensions of z
    prior_latent: int  # priors on u (Figs. 10, 11) and importance sampling, at this dim z
    test_images: int | None  # reconstruction and SVM test accuracy (None: all 10,000)
    is_images: int  # importance sampling: test digits ...
    is_samples: int  # ... and samples per digit
    svm_folds: int = 9
    # Table 1's linear SVM: "primal" (liblinear's primal solver) or "sgd" (SGD on the hinge loss, a fixed
    # budget of 15 epochs). On 55,000 x 784 raw pixels the primal fit takes 51 s and scores 91.73 % (the
    # thesis: 91.80), SGD 9 s and 89.26 %, the dual 94 s unconverged (benchmarks/results/svm_solvers.md):
    # the primal's 10 fits of a 9-fold CV, some 8 minutes, are small beside hours of training
    svm_solver: str = "primal"
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # avae.train.TrainConfig.lr_schedule
    scatter_latent: int = 2  # Fig. 8 and the latent walk
    # Fig. 5 compares a model at a total only where its content latent z has this many dimensions: a
    # transformer spends dim u of the total on the pose, and with z = 2 it cannot hold a digit's identity
    min_content_latent: int = 8
    # every model of Fig. 5, Table 1, the priors and importance sampling is trained this many times
    # (training seeds seed, seed + 1, ...) and the tables compare means over the runs: one run's test error
    # moves by about 2 nats, and its SVM accuracy by about a point, with the training seed alone
    replicates: int = 1
    # "embedded" (4,500 / 500 embedded digits) or "full" (full MNIST, avae.data.reproduction_splits)
    train_data: str = "embedded"
    # Fig. 5's reconstruction error E_q[-log p(x|z,u)]: Monte Carlo draws from q per test digit
    recon_samples: int = 10
    # the over-fitting check: the same error on this many training digits (None: all)
    train_error_images: int | None = 10000
    # Fig. 11: full-covariance priors at these ranks (dimension of u) besides the maximum, per transformer
    full_ranks: tuple[tuple[str, int], ...] = (("tvae-affine", 2), ("tvae-tps", 4))
    # Figs. 6 and 7: samples of every main model at these dimensions of z; Fig. 9: (kind, z) at a total of 30
    sample_latents: tuple[int, ...] = (2, 10, 20)
    fig9_specs: tuple[tuple[str, int], ...] = (("tvae-affine", 24), ("tvae-tps", 12))
    # sample quality: Fréchet distance in a digit classifier's features (trained here on the training
    # digits for this many epochs), samples per model
    fd_samples: int = 2000
    classifier_epochs: int = 3
    # the thesis's optimizer (Adadelta) against ours (Adam) on these models of Fig. 5, one run each
    adadelta: tuple[str, ...] = ()

    def fig5_specs(self) -> list[ModelSpec]:
        specs = []
        for kind, prior in FIG5_SERIES:
            for total in self.totals:
                latent = total - ModelSpec(kind, 1).pose_dof
                if latent >= max(1, self.min_content_latent):
                    specs.append(ModelSpec(kind, latent, prior))
        return specs

    def runs(self, specs) -> list[ModelSpec]:
        """Every training run of ``specs`` (replicate 0 is the one the figures show)."""
        return [replace(s, replicate=k) for s in specs for k in range(self.replicates)]

    def svm_specs(self) -> list[ModelSpec]:
        return [ModelSpec(kind, latent) for latent in self.svm_latents for kind in MAIN_KINDS]

    def scatter_specs(self) -> list[ModelSpec]:
        return [ModelSpec(kind, self.scatter_latent) for kind in MAIN_KINDS]

    def prior_specs(self) -> list[ModelSpec]:
        z = self.prior_latent
        return [ModelSpec("tvae-affine", z), ModelSpec("tvae-affine", z, "diagonal"), ModelSpec("tvae-affine5", z, "diagonal"),
                ModelSpec("tvae-affine", z, "identity"),
                ModelSpec("tvae-affine", z, "full"), ModelSpec("tvae-tps", z), ModelSpec("tvae-tps", z, "diagonal"),
                ModelSpec("tvae-tps", z, "full")] + [ModelSpec(kind, z, "full", rank=r) for kind, r in self.full_ranks]

    def sample_specs(self) -> list[ModelSpec]:
        """Figs. 6, 7 (every main model at each of ``sample_latents``) and 9 (a total of 30)."""
        return ([ModelSpec(kind, z) for z in self.sample_latents for kind in MAIN_KINDS]
                + [ModelSpec(kind, z) for kind, z in self.fig9_specs])

    def adadelta_specs(self) -> list[ModelSpec]:
        """The Adadelta runs and the Adam runs (replicate 0) they are compared with."""
        adam = [ModelSpec.parse(text) for text in self.adadelta]
        return adam + [replace(s, optimizer="adadelta") for s in adam]

    def importance_specs(self) -> list[ModelSpec]:
        return [ModelSpec(kind, self.prior_latent) for kind in MAIN_KINDS] + [
            s for s in self.prior_specs() if s.prior != "none"]

    def all_specs(self) -> list[ModelSpec]:
        specs = self.runs(self.fig5_specs() + self.svm_specs() + self.prior_specs() + self.importance_specs())
        return list(dict.fromkeys(specs + self.scatter_specs() + self.sample_specs() + self.adadelta_specs()))


PRESETS = {
    # smoke test of the whole pipeline (same code path): 1,000 digits, 3 epochs; minutes on 2 cores
    "quick": TransformerPreset("quick", train_images=1000, epochs=3, totals=(14, 26), svm_latents=(8,), prior_latent=8,
                               test_images=1000, is_images=100, is_samples=50),
    # full MNIST (55,000 training digits, the embedded 5,000 validate; all 10,000 test digits), 30 epochs per
    # model (16,500 steps of 100; the thesis: 50 epochs; at 30 the trial already had the affine TVAE
    # and DTVAE ahead of the VAE), every model of Fig. 5, Table 1, the priors and importance sampling trained 3
    # times; Adadelta (the thesis's optimizer) against Adam on four Fig. 5 models. Resumable: `--jobs 2` on 2 cores
    "standard": TransformerPreset("standard", train_images=None, epochs=30, totals=(14, 20, 26, 38),
                                  svm_latents=(8, 20), prior_latent=8, test_images=None, is_images=500, is_samples=500,
                                  replicates=3, train_data="full",
                                  adadelta=("vae:14", "tvae-affine:8", "dtvae-affine:8", "tvae-tps:8")),
}


# ----------------------------------------------------------------------------------- experiments
def preset_data(preset: TransformerPreset, data_dir, seed: int = 0, data: str = "mnist"):
    """(train, val, test) as the preset uses them (its ``train_data``, :func:`avae.data.reproduction_splits`),
    at the thesis's 28x28 (no padding, so the dense nets stay small)."""
    train, val, test = reproduction_splits(preset.train_data, data=data, data_dir=data_dir, seed=seed,
                                           train_limit=preset.train_images, pad_to=None,
                                           where=f"preset '{preset.name}'")
    return train, val, test.take(preset.test_images, seed)


def train_models(specs, train, val, out: Path, preset: TransformerPreset, seed: int = 0, progress: bool = True,
                 device: str = "cpu", jobs: int = 1) -> dict:
    """spec -> trained model, each in ``out/models/NAME`` (reused, or resumed, when already there),
    trained with seed ``seed + spec.replicate``. ``jobs`` > 1 trains that many models at a time in
    separate processes (the torch threads shared out among them): the thesis's dense nets are too small
    to keep two threads busy, so on a 2-core CPU two one-thread processes train 1.2x as fast as one
    two-thread process (benchmarks/results/parallel_training.md)."""
    out = Path(out)
    configs = {s: _train_config(s, preset, seed) for s in specs}
    pending = [s for s in specs if not finished(out / "models" / s.name, configs[s].epochs)]
    if jobs > 1 and len(pending) > 1:
        fit_in_processes([(s.model, s.config(), configs[s], out / "models" / s.name) for s in pending], train, val,
                         jobs, progress=progress, device=device)
    return {s: fit(s.model, s.config(), train, val, configs[s], out / "models" / s.name, resume=True,
                   progress=progress, device=device) for s in specs}


def _train_config(spec: ModelSpec, preset: TransformerPreset, seed: int) -> TrainConfig:
    # Adadelta at its usual learning rate 1.0 (the thesis names the optimizer, not its settings)
    lr = {"adam": preset.lr, "adadelta": 1.0}[spec.optimizer]
    return TrainConfig(epochs=preset.epochs, batch_size=preset.batch_size, lr=lr, lr_schedule=preset.lr_schedule,
                       weight_decay=0.0, seed=seed + spec.replicate, optimizer=spec.optimizer)


def error_terms(model, data, samples: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per image (N,): ``"nll"``, the reconstruction error the thesis plots in Fig. 5 (the second term of
    the likelihood, E_q(z,u|x)[-log p(x|z,u)], by Monte Carlo over ``samples`` draws from q, seeded), or at
    the posterior mean when ``samples`` is 0; ``"nll at mean"``, the error at the posterior mean (z, u);
    ``"kl"``, KL(q(z,u|x) || p(z,u)); ``"loss"`` = ``"nll"`` + ``"kl"`` (the negative ELBO for samples > 0)."""
    at_mean = per_image_loss(model, data)
    nll = at_mean["nll"]
    if samples:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            nll = torch.stack([per_image_loss(model, data, sample=True)["nll"] for _ in range(samples)]).mean(0)
    return {"nll": nll, "nll at mean": at_mean["nll"], "kl": at_mean["kl"], "loss": nll + at_mean["kl"]}


def reconstruction_rows(models: dict, test, samples: int = 0, seed: int = 0) -> list[dict]:
    """Per model: test reconstruction error (:func:`error_terms`: E_q with ``samples`` draws, and at the
    posterior mean) and loss, mean ± s.e. over digits."""
    rows = []
    for spec, model in models.items():
        terms = error_terms(model, test, samples, seed)
        nll, loss, at_mean = (mean_and_sem(terms[k]) for k in ("nll", "loss", "nll at mean"))
        rows.append({"model": KINDS[spec.kind][0], "series": spec.series, "name": spec.name, "prior": spec.prior,
                     "dim z": spec.latent,
                     "dim u": spec.pose_dof, "total latent": spec.total, "nll": nll["mean"], "nll sem": nll["sem"],
                     "nll at mean": at_mean["mean"], "nll at mean sem": at_mean["sem"], "samples": samples,
                     "loss": loss["mean"], "loss sem": loss["sem"], "kl": terms["kl"].mean().item(), "n": nll["n"]})
    return rows


def group_runs(models: dict) -> dict:
    """Specs that differ only in ``replicate`` grouped under their replicate-0 spec, in replicate order."""
    runs = {}
    for spec in sorted(models, key=lambda s: s.replicate):
        runs.setdefault(replace(spec, replicate=0), []).append(spec)
    return runs


def prior_rows(models: dict, test, samples: int = 0, seed: int = 0) -> list[dict]:
    """:func:`replicated_reconstruction_rows` with each model's :func:`pose_spread` (mean over runs)."""
    rows = replicated_reconstruction_rows(models, test, samples=samples, seed=seed)
    for row, replicates in zip(rows, group_runs(models).values()):
        spreads = [pose_spread(models[s], test.images) for s in replicates]
        row.update({k: float(np.mean([x[k] for x in spreads])) for k in spreads[0]})
    return rows


def replicated_reconstruction_rows(models: dict, test, train=None, samples: int = 0, seed: int = 0) -> list[dict]:
    """:func:`reconstruction_rows` over the training runs of each model (specs that differ only in
    ``replicate``): each digit's error is averaged over the runs, then mean ± s.e. over digits; the
    mean of each run is kept in ``"nll replicates"`` (replicate order) to show the spread over seeds.
    With ``train``, also the same error on those (training) digits, ``"train nll"``, averaged over runs:
    the gap between the two is how much a model over-fits its training set."""
    rows = []
    for spec, replicates in group_runs(models).items():
        terms = [error_terms(models[s], test, samples, seed) for s in replicates]
        nll, loss, at_mean = (mean_and_sem(torch.stack([t[k] for t in terms]).mean(0))
                              for k in ("nll", "loss", "nll at mean"))
        rows.append({"model": KINDS[spec.kind][0], "series": spec.series, "name": spec.name, "kind": spec.kind,
                     "prior": spec.prior, "rank": spec.rank,
                     "dim z": spec.latent, "dim u": spec.pose_dof, "total latent": spec.total,
                     "nll": nll["mean"], "nll sem": nll["sem"], "nll at mean": at_mean["mean"],
                     "nll at mean sem": at_mean["sem"], "samples": samples,
                     "loss": loss["mean"], "loss sem": loss["sem"],
                     "kl": torch.stack([t["kl"] for t in terms]).mean().item(), "n": nll["n"],
                     "replicates": len(replicates), "nll replicates": [t["nll"].mean().item() for t in terms]})
        if train is not None:
            rows[-1]["train nll"] = float(np.mean([error_terms(models[s], train, samples, seed)["nll"].mean().item()
                                                   for s in replicates]))
    return rows


@torch.no_grad()
def latent_means(model, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """(N, dim z) posterior means of the content latent z (what the SVMs and scatter plots see)."""
    model.eval()
    return torch.cat([model.encode(images[s : s + batch_size])[0] for s in range(0, len(images), batch_size)]).numpy()


@torch.no_grad()
def mean_pose(model, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(dof,) the average posterior-mean pose of ``images`` (the training digits' mean pose)."""
    model.eval()
    return torch.cat([model.pose_of(images[s : s + batch_size]) for s in range(0, len(images), batch_size)]).mean(0)


@torch.no_grad()
def pose_spread(model, images: torch.Tensor) -> dict[str, float]:
    """How much pose the model uses: the standard deviation of the posterior-mean poses of
    ``images`` and the prior's standard deviation (NaN without a prior), each averaged over the
    pose parameters, and the largest correlation (absolute) between two pose parameters over ``images``
    (the thesis: "up to 30 %" for the affine posterior)."""
    model.eval()
    poses = torch.cat([model.pose_of(images[s : s + 1000]) for s in range(0, len(images), 1000)])
    latent = model.pose_latent
    if latent.prior in ("diagonal", "identity"):
        prior_std = (0.5 * latent.prior_logvar).exp().mean().item()
    elif latent.prior == "full":
        prior_std = latent.weight.pow(2).sum(1).sqrt().mean().item()
    else:
        prior_std = float("nan")
    corr = torch.corrcoef(poses.T)
    off_diagonal = corr[~torch.eye(len(corr), dtype=torch.bool)].abs().nan_to_num()
    return {"pose std": poses.std(0).mean().item(), "prior std": prior_std,
            "max pose correlation": off_diagonal.max().item() if off_diagonal.numel() else float("nan"),
            **prior_pose_parts(model)}


@torch.no_grad()
def prior_pose_parts(model, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    """What an affine model's prior on u varies, in words a reader can picture: the standard deviation
    over ``n`` poses drawn from p(u) of the rotation and shear angles (degrees) and of the log-scales
    of their sampling matrices, split as R(angle) Shear(shear) diag(sx, sy) (the thesis: the fitted
    6-dof prior gives horizontally sheared digits, the 5-dof prior a noticeable variation in rotation).
    NaN for the TPS and for models without a prior."""
    from avae.transforms.poses import POSE_FAMILIES, wrap_angle

    latent = model.pose_latent
    names = ("prior rotation sd (deg)", "prior shear sd (deg)", "prior log-scale sd")
    if latent.prior == "none" or model.transformer.name not in ("affine", "affine5"):
        return dict.fromkeys(names, float("nan"))
    u = latent.sample_prior(n, torch.Generator().manual_seed(seed))
    matrix = model.transformer.matrix(u) if model.transformer.name == "affine5" else u.view(-1, 2, 3)
    angle, shear, log_sx, log_sy = POSE_FAMILIES["affine"].params_from_matrix(matrix.double()).unbind(-1)
    angle = wrap_angle(angle - torch.atan2(angle.sin().mean(), angle.cos().mean()))  # spread about the circular mean
    return {"prior rotation sd (deg)": torch.rad2deg(angle).std().item(),
            "prior shear sd (deg)": torch.rad2deg(shear).std().item(),
            "prior log-scale sd": 0.5 * (log_sx.std() + log_sy.std()).item()}


def svm_rows(features: dict[str, tuple[np.ndarray, np.ndarray]], y_train, y_test, *, folds: int = 9, seed: int = 0,
             pca: int | None = None, solver: str = "primal") -> list[dict]:
    """A linear SVM per feature set (``solver`` "primal": scikit-learn LinearSVC, C = 1, liblinear's primal
    solver; "sgd": SGDClassifier on the hinge loss, alpha = 1 / (C n), 15 epochs): ``folds``-fold
    cross-validated accuracy on the training features (mean and standard deviation over folds, %)
    and test accuracy after fitting on all training features (%). Latents and PCA components are
    standardised; raw pixels are not (they share one scale, and standardising the nearly constant
    border pixels makes liblinear crawl)."""
    try:
        from sklearn.decomposition import PCA
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.linear_model import SGDClassifier
        from sklearn.svm import LinearSVC
    except ImportError:
        raise AvaeError("the SVM probes need scikit-learn: pip install scikit-learn") from None

    rows = []
    for label, (train_x, test_x) in features.items():
        began = time.perf_counter()
        steps = [PCA(pca, random_state=seed)] if pca and label.startswith("PCA") else []
        steps += [] if label == "raw pixels" else [StandardScaler()]
        n_fit = len(train_x) * (folds - 1) // folds
        svm = (LinearSVC(C=1.0, dual=False, max_iter=2000, random_state=seed) if solver == "primal" else
               SGDClassifier(loss="hinge", alpha=1.0 / n_fit, max_iter=15, tol=None, random_state=seed))
        classifier = make_pipeline(*steps, svm)
        cv = cross_val_score(classifier, train_x, y_train, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        test_accuracy = classifier.fit(train_x, y_train).score(test_x, y_test)
        rows.append({"features": label, "dim": int(pca if pca and label.startswith("PCA") else train_x.shape[1]),
                     "cv accuracy": 100 * float(cv.mean()), "cv std": 100 * float(cv.std()),
                     "test accuracy": 100 * float(test_accuracy), "seconds": time.perf_counter() - began})
    return rows


def table1_rows(models: dict, train, test, latents, *, folds: int = 9, seed: int = 0, solver: str = "primal") -> list[dict]:
    """Table 1: raw pixels, PCA(d) and every model's latent means at each latent size d. A model trained
    several times (specs that differ only in ``replicate``) gets one row: accuracies averaged over its
    runs, with ``"test accuracy sd"`` over runs and each run's ``"test accuracy runs"`` (replicate order)."""
    import warnings

    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    raw = (train.images.flatten(1).numpy(), test.images.flatten(1).numpy())
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Liblinear failed to converge")  # such a fold still counts
        rows += [{"size": "-", **_mean_over_runs([r])}
                 for r in svm_rows({"raw pixels": raw}, y_train, y_test, folds=folds, seed=seed, solver=solver)]
        for d in latents:
            rows += [{"size": d, **_mean_over_runs([r])}
                     for r in svm_rows({f"PCA({d})": raw}, y_train, y_test, folds=folds, seed=seed, pca=d, solver=solver)]
            for spec, replicates in group_runs({s: m for s, m in models.items() if s.latent == d and s.prior == "none"}).items():
                label = f"{KINDS[spec.kind][0]}({d})"
                per_run = [svm_rows({label: (latent_means(models[s], train.images), latent_means(models[s], test.images))},
                                    y_train, y_test, folds=folds, seed=seed, solver=solver)[0] for s in replicates]
                rows.append({"size": d, **_mean_over_runs(per_run)})
    for r in rows:
        model = r["features"].split("(")[0]
        r["thesis test accuracy"] = THESIS_TABLE1.get((model, r["size"]), "-")
    return rows


def _mean_over_runs(rows: list[dict]) -> dict:
    """One SVM row from the rows of several training runs of the same model."""
    test = np.array([r["test accuracy"] for r in rows])
    return {**rows[0], "cv accuracy": float(np.mean([r["cv accuracy"] for r in rows])),
            "cv std": float(np.mean([r["cv std"] for r in rows])), "test accuracy": float(test.mean()),
            "test accuracy sd": float(test.std(ddof=1)) if len(rows) > 1 else 0.0, "runs": len(rows),
            "test accuracy runs": test.tolist(), "seconds": float(sum(r["seconds"] for r in rows))}


def importance_rows(models: dict, test, *, samples: int, seed: int = 0) -> list[dict]:
    """Per model: log p(x) by importance sampling with ``samples`` draws from q, the ELBO on the same
    draws, and their gap, per test digit (nats; each averaged over the model's training runs), mean ±
    s.e. over digits, beside KL(q(z,u|x) || p(z,u)) (analytic; the thesis's section VI.i found the gap
    roughly equal to it); each run's mean log p(x) in ``"log p(x) replicates"``."""
    rows = []
    for spec, replicates in group_runs(models).items():
        began = time.perf_counter()
        bounds = [importance_sampled_bounds(models[s], test.images, samples, seed=seed) for s in replicates]
        log_px, elbo = (torch.stack([b[k] for b in bounds]).mean(0) for k in ("log_px", "elbo"))
        kl = torch.stack([per_image_loss(models[s], test)["kl"] for s in replicates]).mean(0)
        lp, el, gap, kl_ = (mean_and_sem(v) for v in (log_px, elbo, log_px - elbo, kl))
        rows.append({"model": spec.label, "name": spec.name, "prior on u": spec.prior if spec.kind != "vae" else "-",
                     "log p(x)": lp["mean"], "log p(x) sem": lp["sem"], "ELBO": el["mean"], "ELBO sem": el["sem"],
                     "gap": gap["mean"], "gap sem": gap["sem"], "KL": kl_["mean"], "KL sem": kl_["sem"],
                     "gap / KL": gap["mean"] / kl_["mean"] if kl_["mean"] > 0 else float("nan"),
                     "samples": samples, "n": lp["n"],
                     "replicates": len(replicates), "log p(x) replicates": [b["log_px"].mean().item() for b in bounds],
                     "seconds": time.perf_counter() - began})
    return rows


@torch.no_grad()
def sample_quality_rows(models: dict, specs, net, reference: np.ndarray, *, samples: int, seed: int = 0,
                        train=None) -> list[dict]:
    """Per model of ``specs``: the Fréchet distance between ``samples`` of its samples and the real digits
    whose classifier features are ``reference`` (:mod:`avae.evaluate.sample_quality`), with u at the
    training digits' mean pose (``train``) and at the identity. Lower is closer to real digits."""
    from avae.evaluate.sample_quality import frechet_distance, net_features

    rows = []
    for spec in specs:
        model = models[spec].eval()
        generator = lambda: torch.Generator().manual_seed(seed)  # noqa: E731 - the same z for every pose
        row = {"model": KINDS[spec.kind][0], "dim z": spec.latent, "dim u": spec.pose_dof, "total latent": spec.total,
               "samples": samples}
        if spec.kind == "vae":
            row["FD (mean pose)"] = row["FD (identity)"] = frechet_distance(
                net_features(net, model.sample(samples, generator())), reference)
        else:
            pose = mean_pose(model, train.images)
            row["FD (mean pose)"] = frechet_distance(net_features(net, model.sample(samples, generator(), pose=pose)), reference)
            row["FD (identity)"] = frechet_distance(
                net_features(net, model.sample(samples, generator(), pose=model.transformer.identity())), reference)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------- the command
@torch.no_grad()
def write_figures(models: dict, preset, train, test, out, *, seed: int = 0) -> dict[str, str]:
    """The figures that need the trained models, drawn with :mod:`avae.report.transformer`'s helpers:
    sample grids, reconstructions, samples under each prior, latent scatter and latent walk. Returns
    {figure: file name}."""
    out = Path(out)
    for m in models.values():
        m.eval()
    written = {}

    @functools.cache
    def training_pose(spec):
        return mean_pose(models[spec], train.images)

    def draw(spec, n, generator, pose=None):
        model = models[spec]
        if spec.kind == "vae":
            return model.sample(n, generator)
        return model.sample(n, generator, pose=training_pose(spec) if pose is None else pose)

    # Figs. 6, 7 and 9: z ~ N(0, I), u at the identity (the thesis's captions) and at the training digits'
    # mean pose (its section V.i), the same z for every model of a size
    def sample_panels(specs, with_z=False):
        row = {}
        for spec in specs:
            short = spec.label.split(" (")[0] + (f" (z={spec.latent})" if with_z else "")
            if spec.kind == "vae":
                row[short] = draw(spec, SAMPLE_GRID**2, torch.Generator().manual_seed(seed))
                continue
            identity = models[spec].transformer.identity()
            row[f"{short}, u = identity"] = draw(spec, SAMPLE_GRID**2, torch.Generator().manual_seed(seed), identity)
            row[f"{short}, u = mean pose"] = draw(spec, SAMPLE_GRID**2, torch.Generator().manual_seed(seed))
        return row

    grid = {f"z = {z}": sample_panels([ModelSpec(k, z) for k in MAIN_KINDS]) for z in preset.sample_latents}
    written["samples"] = panel_grid(grid, out / "fig6_7_samples.png", SAMPLE_GRID,
                                    title="Figs. 6 and 7: samples, z ~ N(0, I), u at the identity and at the "
                                          "training digits' mean pose").name
    fig9 = [ModelSpec(kind, z) for kind, z in preset.fig9_specs]
    written["samples_total30"] = panel_grid(
        {"total 30": sample_panels(fig9, with_z=True)}, out / "fig9_samples_total30.png", SAMPLE_GRID,
        title="Fig. 9: samples at a total latent size of 30 (" + ", ".join(s.label for s in fig9) + ")").name
    z = preset.prior_latent
    main = [ModelSpec(k, z) for k in MAIN_KINDS]

    # reconstructions: the input, the canonical image and the posed output
    x = test.images[:10]
    rows = {"test digit": x}
    for spec in main:
        out_ = models[spec].reconstruct(x, sample=False)
        short = spec.label.split(" (")[0]
        if "canonical_input" in out_:
            rows[f"{short}: x brought to canonical pose"] = out_["canonical_input"]
        if "canonical" in out_:
            rows[f"{short}: canonical decoding"] = out_["canonical"]
        rows[f"{short}: reconstruction"] = out_["reconstruction"]
    written["reconstructions"] = image_rows(rows, out / "fig_reconstructions.png",
                                            title=f"Test digits, z = {z}: canonical images and reconstructions").name

    # Figs. 10, 11: the same z posed by u drawn from each prior (empirical training poses for "none")
    rows = {}
    for spec in preset.prior_specs():
        model, g = models[spec], torch.Generator().manual_seed(seed)
        zs = torch.randn(10, spec.latent, generator=g)
        if spec.prior == "none":
            pick = torch.randint(len(train), (10,), generator=g)
            pose, how = model.pose_of(train.images[pick]), "u of random training digits"
        else:
            pose, how = model.pose_latent.sample_prior(10, g), "u ~ p(u)"
        rows[f"{spec.label}: canonical"] = model.decode(zs)
        rows[f"{spec.label}: {how}"] = model.transformer.pose(model.decode(zs), pose)
    written["prior_samples"] = image_rows(rows, out / "fig10_prior_samples.png",
                                          title="Figs. 10, 11: the same z, posed by u drawn from each prior").name

    # Fig. 8 and the latent walk: 2-D content latents
    flat = [ModelSpec(k, preset.scatter_latent) for k in MAIN_KINDS]
    if preset.scatter_latent == 2:
        written["scatter"] = latent_scatter({s.label: latent_means(models[s], test.images) for s in flat},
                                            test.labels.numpy(), out / "fig8_latent_scatter.png",
                                            title=f"Fig. 8: posterior means of z, {len(test)} test digits").name
        from statistics import NormalDist

        q = torch.tensor([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, 10)], dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(q, -q, indexing="xy"), -1).reshape(-1, 2)  # z2 grows upwards
        walks = {}
        for s in flat:
            canonical = models[s].decode(grid)
            walks[s.label] = canonical if s.kind == "vae" else models[s].transformer.pose(
                canonical, training_pose(s).expand(len(grid), -1))
        written["walk"] = panels(walks, out / "fig7_latent_walk.png", 10,
                                 title="2-D latent walk: z over the normal's 5-95 % quantiles, u at the mean pose").name
    return written


def reproduce_transformer_vae(preset: TransformerPreset, out: Path, *, data_dir, seed: int = 0,
                              progress: bool = True, data: str = "mnist", device: str = "cpu", jobs: int = 1) -> dict:
    """Train what the preset names, run every experiment, write metrics.json, CSVs, figures and
    report.md into ``out``; returns the summary stored in metrics.json."""
    from avae.report import transformer as report

    out = Path(out)
    began = time.perf_counter()
    torch.manual_seed(seed)
    train, val, test = preset_data(preset, data_dir, seed, data)
    is_test = test.take(preset.is_images, seed=seed)
    models = train_models(preset.all_specs(), train, val, out, preset, seed=seed, progress=progress, device=device,
                          jobs=jobs)
    train_seconds = {s.name: _training_seconds(out / "models" / s.name) for s in models}

    def runs(specs):
        return {s: models[s] for s in preset.runs(specs)}

    from avae.evaluate.sample_quality import mnistnet, net_features

    samples = preset.recon_samples
    train_check = train.take(preset.train_error_images, seed)
    fig5 = replicated_reconstruction_rows(runs(preset.fig5_specs()), test, train_check, samples=samples, seed=seed)
    priors = prior_rows(runs(preset.prior_specs()), test, samples=samples, seed=seed)
    table1 = table1_rows(runs(preset.svm_specs()), train, test, preset.svm_latents, folds=preset.svm_folds, seed=seed,
                         solver=preset.svm_solver)
    importance = importance_rows(runs(preset.importance_specs()), is_test, samples=preset.is_samples, seed=seed)
    convergence = convergence_rows(preset.fig5_specs(), out)
    optimizers = replicated_reconstruction_rows({s: models[s] for s in preset.adadelta_specs()}, test,
                                                samples=samples, seed=seed) if preset.adadelta else []
    for row, spec in zip(optimizers, preset.adadelta_specs()):  # one run each, in the same order
        row.update({"optimizer": spec.optimizer, "epochs": len(_history(out / "models" / spec.name)),
                    "training seconds": _training_seconds(out / "models" / spec.name)})
    net = mnistnet(train, out / "models" / "mnistnet.pt", epochs=preset.classifier_epochs, seed=seed)
    fd_test = test.take(preset.fd_samples, seed)
    quality = sample_quality_rows(models, preset.sample_specs(), net, net_features(net, fd_test.images),
                                  samples=preset.fd_samples, seed=seed, train=train)
    for name, rows in (("reconstruction_vs_latent", fig5), ("priors", priors), ("table1_svm", table1),
                       ("importance_sampling", importance), ("convergence", convergence), ("optimizers", optimizers),
                       ("sample_quality", quality)):
        write_csv(out / f"{name}.csv", rows)

    figures = write_figures(models, preset, train, test, out, seed=seed)
    figures["fig5"] = report.fig5(fig5, out / "fig5_reconstruction_vs_latent.png", len(test)).name
    summary = {"reconstruction_vs_latent": fig5, "convergence": convergence, "priors": priors, "table1": table1,
               "importance_sampling": importance, "optimizers": optimizers, "sample_quality": quality,
               "figures": figures, "training_seconds": train_seconds,
               "seconds": time.perf_counter() - began}
    meta = {**provenance(), "preset": asdict(preset), "seed": seed, "train_data": train.describe(),
            "validation_data": val.describe(), "test_data": test.describe(), "importance_data": is_test.describe(),
            "train_error_data": train_check.describe(), "sample_quality_data": fd_test.describe(),
            "classifier_test_accuracy": 100 * accuracy(net, test.images, test.labels).mean().item(),
            "train_config": {"epochs": preset.epochs, "batch_size": preset.batch_size, "lr": preset.lr,
                             "lr_schedule": preset.lr_schedule, "weight_decay": 0.0, "optimizer": "Adam"}}
    write_json(out / "metrics.json", {**meta, "summary": summary})
    report.render_report(out)
    return summary


def convergence_rows(specs, out: Path, last: int = 10) -> list[dict]:
    """How far from converged each model is: its validation reconstruction error (posterior-mean
    latents, as the training loop logs it each epoch) at half its epochs, at the end, and its change
    over the last ``last`` epochs (negative: still falling)."""
    rows = []
    for spec in specs:
        nll = [h["val_nll"] for h in _history(Path(out) / "models" / spec.name)]
        rows.append({"model": spec.series, "dim z": spec.latent, "total latent": spec.total, "epochs": len(nll),
                     "val nll at half": nll[len(nll) // 2 - 1], "val nll": nll[-1],
                     "last epochs": min(last, len(nll) - 1), "change": nll[-1] - nll[-1 - min(last, len(nll) - 1)]})
    return rows


def _history(run_dir: Path) -> list[dict]:
    import json

    return json.loads((run_dir / "metrics.json").read_text())["history"]


def _training_seconds(run_dir: Path) -> float:
    return float(sum(h["seconds"] for h in _history(run_dir)))


__all__ = ["ModelSpec", "TransformerPreset", "PRESETS", "KINDS", "FIG5_SERIES", "THESIS_TABLE1", "reproduce_transformer_vae",
           "write_figures",
           "preset_data", "train_models", "error_terms", "reconstruction_rows", "replicated_reconstruction_rows",
           "convergence_rows", "pose_spread", "svm_rows", "table1_rows", "group_runs", "prior_rows",
           "importance_rows", "latent_means", "mean_pose", "sample_quality_rows"]
