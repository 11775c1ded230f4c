"""Short diagnostic runs behind docs/results/autoencoding-vae/diagnosis/README.md (issue 7).

One model of the standard architecture (4 x 200 MLPs, latent 64) trained for ``--steps`` Adam steps
of batch 64 on the 4,500 ColorMNIST training digits, at one thread, then probed (the report's
standardised logistic regression on the encoder means) and attacked (the report's PGD, 20 steps of
eps/8, margin + cross-entropy runs; and one-step FGSM) on 500 coloured test digits (a seeded draw
from the test set). Options the library's model does not have, to test the released code's choices:

* ``--noise var``: sample z = mu + eps * variance, as the released JAX code does (ours: the s.d.);
* ``--variance V``: the Gaussian likelihood's observation variance (the released code's flag ``obs_var``,
  default 0.5); a smaller one makes each unit of squared error cost more nats, against posterior collapse;
* ``--recolor 1``: draw every digit's colour afresh for each batch, as the released data iterator does;
* ``--data embedded+sd3``: more training digits, borrowed from the MNIST test set (its first 5,000, NIST
  SD-3 writers; ``avae.data.borrow_test_writers``), evaluated on test digits of its last 5,000 only (SD-1
  writers); ``--eval-on sd1`` evaluates a run on the 4,500 digits on those same test digits. A
  diagnostic of the effect of the training set's size, not the MNIST protocol;
* ``--checkpoint DIR``: evaluate a trained model (for example a committed `standard` model) instead of
  training one; ``--eps`` and ``--fgsm-eps`` choose the radii;
* ``--encoding sample``: the attacked classifier sees a sample z ~ q(z|x), drawn afresh at every call
  (each PGD step's gradient and the final verdict each use their own draw), instead of the mean, and the
  probe is fit on 5 draws per training digit: an evaluation of the stochastic encoder, whose noisy
  gradients can make a model look robust;
  ``--eot K`` averages the classifier's logits over K draws (expectation over transformation, the
  standard remedy; the verdict then uses K draws too).

Appends one JSON line per evaluation to ``--results``: at ``--steps``, and also at every step count
in ``--eval-at`` (a training-length curve from one run; the evaluations leave the training
trajectory unchanged, the random state is restored after each). Example:

    python docs/results/autoencoding-vae/diagnosis/diagnose.py --variant AVAE --steps 3000 --lr 1e-3
"""
import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import avae
from avae.attacks import EncoderClassifier, accuracy, attack_classifier, fgsm
from avae.data import borrow_test_writers, color_mnist, load
from avae.data.color import color_rgb
from avae.evaluate.autoencoding import encoder_means, latent_usage, linear_probe
from avae.models.autoencoding_vae import AutoencodingVAE, AutoencodingVAEConfig
from avae.models.likelihoods import kl_standard_normal


def posterior_draw(model, x: torch.Tensor) -> torch.Tensor:
    """One sample z ~ q(z|x) (the global random state)."""
    mu, logvar = model.encode(x)
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


class SampledEncoderClassifier(nn.Module):
    """Pixels -> z ~ q(z|x) -> linear classifier, logits averaged over ``draws`` samples."""

    def __init__(self, model, head: nn.Linear, draws: int):
        super().__init__()
        self.model, self.head, self.draws = model, head, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.head(posterior_draw(self.model, x)) for _ in range(self.draws)]).mean(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="VAE", choices=["VAE", "AVAE", "SE", "SE-AVAE"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise", default="std", choices=["std", "var"])
    p.add_argument("--rho", type=float, default=0.975)
    p.add_argument("--variance", type=float, default=0.5, help="observation variance of the Gaussian likelihood")
    p.add_argument("--recolor", type=int, default=0)
    p.add_argument("--se-weight", type=float, default=1.0)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--data", default="embedded", choices=["embedded", "embedded+sd3"])
    p.add_argument("--eval-on", default="all", choices=["all", "sd1"],
                   help="test digits drawn from the whole test set or its SD-1 half (forced by embedded+sd3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="/work/shared/data/mnist")
    p.add_argument("--results", default="results.jsonl")
    p.add_argument("--save", default="", help="save the trained state dict here")
    p.add_argument("--eval-at", default="", help="comma-separated step counts to evaluate at before --steps")
    p.add_argument("--checkpoint", default="", help="evaluate this trained model instead of training one")
    p.add_argument("--eps", default="0,0.05,0.1,0.2", help="PGD radii, comma-separated")
    p.add_argument("--fgsm-eps", default="0.1,0.2", help="FGSM radii, comma-separated")
    p.add_argument("--encoding", default="mean", choices=["mean", "sample"])
    p.add_argument("--eot", type=int, default=1, help="with --encoding sample: logits averaged over this many draws")
    a = p.parse_args()
    if a.checkpoint and a.steps:
        p.error("--checkpoint evaluates a trained model: pass --steps 0")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    grey = load("mnist-embedded", "train", pad_to=None, seed=0)
    grey_test = load("mnist", "test", data_dir=a.data_dir, pad_to=None, seed=0)
    enlarged, sd1 = borrow_test_writers(grey, grey_test)
    if a.data == "embedded+sd3":
        grey, a.eval_on = enlarged, "sd1"
    train = color_mnist(grey, seed=0)
    test = color_mnist((sd1 if a.eval_on == "sd1" else grey_test).take(a.test, seed=0), seed=2)
    config = AutoencodingVAEConfig(latent=64, rho=a.rho, avae="AVAE" in a.variant, smooth=a.variant.startswith("SE"),
                                   se_weight=a.se_weight, variance=a.variance)
    model = avae.load(a.checkpoint) if a.checkpoint else AutoencodingVAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr)
    generator = torch.Generator().manual_seed(a.seed)

    def loss(x):
        if a.noise == "std":
            return model.loss(x)["loss"]
        mu, logvar = model.encode(x)  # the released code's sample: noise times the variance
        reconstruction = model.decode(mu + torch.randn_like(mu) * logvar.exp())
        total = model.nll(x, reconstruction) + kl_standard_normal(mu, logvar)
        if config.avae:
            total = total + model.autoencoding_terms(mu, logvar, reconstruction)["avae"]
        if config.smooth:
            total = total + config.se_weight * model.smoothness_penalty(x, mu, logvar)
        return total

    def evaluate(step: int, seconds: float) -> None:
        rng = torch.get_rng_state()
        model.eval().requires_grad_(False)
        usage = latent_usage(model, test.images)
        if a.encoding == "mean":
            digit = EncoderClassifier(model, linear_probe(encoder_means(model, train.images), train.labels))
        else:  # the probe is fit on what it will see: 5 posterior draws per training digit
            with torch.no_grad():
                draws = torch.cat([posterior_draw(model, train.images) for _ in range(5)])
            digit = SampledEncoderClassifier(model, linear_probe(draws, train.labels.repeat(5)), a.eot)
        row = {**vars(a), "training digits": len(train), "steps": step, "seconds": round(seconds, 1),
               "kl": round(usage["kl"]["mean"], 1), "active_dims": usage["active_dims"]}
        if a.checkpoint:  # the model's own settings, not this script's training options
            row.update(variant=Path(a.checkpoint).name,
                       **{k: None for k in ("lr", "noise", "rho", "variance", "recolor", "se_weight")})
        for eps in (float(e) for e in a.eps.split(",")):
            adv = attack_classifier(digit, test.images, test.labels, eps, steps=20, step_size=eps / 8, seed=0)
            row[f"pgd {eps:g}"] = round(100 * accuracy(digit, adv, test.labels).mean().item(), 1)
        for eps in (float(e) for e in a.fgsm_eps.split(",") if e.strip()):
            row[f"fgsm {eps:g}"] = round(100 * accuracy(digit, fgsm(digit, test.images, test.labels, eps),
                                                        test.labels).mean().item(), 1)
        print(json.dumps(row), flush=True)
        with open(a.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        model.train().requires_grad_(True)
        torch.set_rng_state(rng)

    checkpoints = sorted({int(s) for s in a.eval_at.split(",") if s.strip()} | {a.steps})
    began, step, seconds = time.perf_counter(), 0, 0.0
    model.train()
    if 0 in checkpoints:  # the untrained encoder
        evaluate(0, 0.0)
    while step < a.steps:
        order = torch.randperm(len(train.images), generator=generator)
        for start in range(0, len(order) - 63, 64):
            index = order[start:start + 64]
            if a.recolor:
                colors = torch.randint(1, 8, (len(index),), generator=generator)
                x = grey.images[index] * color_rgb(colors)[:, :, None, None]
            else:
                x = train.images[index]
            optimizer.zero_grad(set_to_none=True)
            loss(x).mean().backward()
            optimizer.step()
            step += 1
            if step in checkpoints:  # training seconds only, evaluations excluded
                seconds += time.perf_counter() - began
                evaluate(step, seconds)
                began = time.perf_counter()
            if step == a.steps:
                break
    if a.save:
        torch.save(model.state_dict(), a.save)


if __name__ == "__main__":
    main()
