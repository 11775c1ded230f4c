"""L-infinity PGD on pixels in [0, 1]: the search smooth encoders train against, and the attacks
that evaluate them (against an encoder plus a linear classifier on its means, and against the
representation itself), with a cross-check against the Adversarial Robustness Toolbox.

Every attack is projected gradient ascent (Madry et al. 2018) from a uniform random start in the
ball, with sign steps, keeping each image's best iterate; it runs in batches with the model in
evaluation mode and deterministic encoding (the posterior mean).
"""
from __future__ import annotations

import torch
from torch import nn

from avae.errors import AvaeError


def pgd_linf(objective, x: torch.Tensor, epsilon: float, steps: int, step_size: float, *,
             random_start: bool = True, generator: torch.Generator | None = None, score=None) -> torch.Tensor:
    """Projected gradient ascent on ``objective(x_adv) -> (N,)`` in the L-infinity ball of radius
    ``epsilon`` around ``x``, inside [0, 1]; returns each image's best iterate: the one with the
    highest ``score(x_adv) -> (N,)`` (default: the objective itself).

    Gradients are taken with respect to the images only (``torch.autograd.grad``), so no gradient
    accumulates in any network's weights. ``step_size`` is absolute (in pixel units).
    """
    x = x.detach()
    if epsilon == 0:
        return x.clone()
    if random_start:
        # drawn on the (CPU) generator, then moved: torch refuses a CPU generator for a CUDA tensor,
        # and the same seed gives the same start on every device
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(device=x.device, dtype=x.dtype)
        adv = (x + epsilon * noise).clamp(0, 1)
    else:
        adv = x.clone()
    best, best_value = adv.clone(), torch.full((x.shape[0],), -float("inf"), device=x.device)
    for step in range(steps + 1):
        adv.requires_grad_(True)
        with torch.enable_grad():
            value = objective(adv)
            grad = torch.autograd.grad(value.sum(), adv)[0] if step < steps else None
        with torch.no_grad():
            value = value.detach() if score is None else score(adv.detach())
            better = value > best_value
            best[better], best_value[better] = adv.detach()[better], value[better]
            if grad is None:
                break
            adv = adv.detach() + step_size * grad.sign()
            adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp(0, 1)
    return best


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Best wrong logit minus the true one, (N,): positive exactly when the image is misclassified."""
    true = logits.gather(1, labels[:, None])[:, 0]
    wrong = logits.scatter(1, labels[:, None], -float("inf")).amax(1)
    return wrong - true


class EncoderClassifier(nn.Module):
    """Pixels -> encoder mean -> linear classifier: the function the pixel attack targets."""

    def __init__(self, model, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.encode(x)[0])


class DecodedClassifier(nn.Module):
    """Pixels -> encoder mean -> decoder mean g(mu(x)) -> linear classifier on its pixels: the slides'
    evaluation ("passing values from the latent space to the decoder and using those outputs to solve
    the classification"), attacked end to end (protocol D of the Autoencoding VAE report)."""

    def __init__(self, model, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.decode(self.model.encode(x)[0]).flatten(1))


# Images per attack batch: on one CPU thread a conv encoder's input gradient costs 0.95 ms per image and
# step at batch 50, 1.2 ms at 200 and 1.9 ms at 400 (cache); the MLPs' cost is flat from 100 to 1,000.
ATTACK_BATCH = 100


def _batched(fn, *tensors, batch_size: int):
    return torch.cat([fn(*(t[s:s + batch_size] for t in tensors)) for s in range(0, len(tensors[0]), batch_size)])


def attack_classifier(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, *,
                      steps: int, step_size: float, seed: int = 0, batch_size: int = ATTACK_BATCH) -> torch.Tensor:
    """PGD against ``classifier`` (pixels -> logits) within the epsilon ball, run twice from
    different random starts: once ascending the margin (best wrong logit minus true, Carlini &
    Wagner's loss), once the cross-entropy (as ART and most libraries); each image keeps the iterate
    of highest margin over both runs and all steps, so an image misclassified at any point stays so.
    Neither loss dominates the other on every model; together they are at least as strong as either
    (tests/test_autoencoding_vae.py and the reports compare with ART's PGD). ``step_size`` is
    absolute (pixel units)."""
    classifier.eval()
    generator = torch.Generator().manual_seed(seed)
    losses = (lambda logits, y: margin(logits, y),
              lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="none"))

    def attack(x, y):
        def score(a):
            return margin(classifier(a), y)

        runs = [pgd_linf(lambda a, loss=loss: loss(classifier(a), y), x, epsilon, steps, step_size,
                         generator=generator, score=score) for loss in losses]
        with torch.no_grad():
            best = runs[0].clone()
            better = score(runs[1]) > score(runs[0])
            best[better] = runs[1][better]
        return best

    return _batched(attack, images, labels, batch_size=batch_size)


def fgsm(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, *,
         batch_size: int = ATTACK_BATCH) -> torch.Tensor:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size ``epsilon`` along the
    sign of the cross-entropy's gradient from the clean image, clipped to [0, 1]; an image keeps its
    clean version where that scores a higher margin. A weak attack, reported beside PGD to show how
    much of a model's accuracy loss needs the iterative search."""
    classifier.eval()

    def attack(x, y):
        return pgd_linf(lambda a: nn.functional.cross_entropy(classifier(a), y, reduction="none"), x, epsilon, 1,
                        epsilon, random_start=False, score=lambda a: margin(classifier(a), y))

    return _batched(attack, images, labels, batch_size=batch_size)


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Per-image correctness (N,) as floats 0/1."""
    classifier.eval()
    return _batched(lambda x, y: (classifier(x).argmax(1) == y).float(), images, labels, batch_size=batch_size)


REPRESENTATION_OBJECTIVES = ("mean", "w2")


def attack_representation(model, images: torch.Tensor, epsilon: float, *, steps: int, step_size: float,
                          seed: int = 0, batch_size: int = ATTACK_BATCH, objective: str = "mean") -> torch.Tensor:
    """PGD on the representation alone, no classifier: ``objective="mean"`` maximises |mu(x_adv) - mu(x)|^2,
    the squared distance between the clean and attacked latent means; ``"w2"`` the squared 2-Wasserstein
    distance between the posteriors q(z|x) and q(z|x_adv) (means and standard deviations). Returns the
    attacked images."""
    if objective not in REPRESENTATION_OBJECTIVES:
        raise AvaeError(f"attack_representation: objective must be one of {', '.join(REPRESENTATION_OBJECTIVES)}, "
                        f"got {objective!r}")
    from avae.models.gaussians import w2_squared

    model.eval()
    generator = torch.Generator().manual_seed(seed)

    def attack(x):
        with torch.no_grad():
            clean_mu, clean_logvar = model.encode(x)
        if objective == "mean":
            def distance(a):
                return (model.encode(a)[0] - clean_mu).pow(2).sum(1)
        else:
            def distance(a):
                return w2_squared(clean_mu, clean_logvar, *model.encode(a))
        return pgd_linf(distance, x, epsilon, steps, step_size, generator=generator)

    return _batched(attack, images, batch_size=batch_size)


def art_available() -> bool:
    """Whether the Adversarial Robustness Toolbox (``art``, the test extra) is installed, for the PGD
    cross-check."""
    import importlib.util

    return importlib.util.find_spec("art") is not None


def art_pgd(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, *, steps: int,
            step_size: float, n_classes: int = 10, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """The same attack by the Adversarial Robustness Toolbox's ProjectedGradientDescent (cross-entropy,
    one random start), for cross-checking :func:`attack_classifier`."""
    if not art_available():
        raise AvaeError("the ART cross-check needs adversarial-robustness-toolbox: pip install 'avae[test]'")
    import numpy as np
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier.eval()
    wrapped = PyTorchClassifier(model=classifier, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                nb_classes=n_classes, clip_values=(0.0, 1.0), device_type="cpu")
    np.random.seed(seed)  # ART draws its random start from numpy's global generator
    attack = ProjectedGradientDescent(wrapped, norm=np.inf, eps=epsilon, eps_step=step_size, max_iter=steps,
                                      num_random_init=1, batch_size=batch_size, verbose=False)
    adv = attack.generate(images.numpy(), y=np.eye(n_classes, dtype=np.float32)[labels.numpy()])
    return torch.from_numpy(adv).float()


__all__ = ["pgd_linf", "margin", "EncoderClassifier", "DecodedClassifier", "attack_classifier", "fgsm", "attack_representation", "accuracy",
           "art_available", "art_pgd"]
