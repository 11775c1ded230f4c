"""Which linear-SVM solver Table 1 of the Transformer VAE report can afford on full MNIST.

The thesis's Table 1 fits a linear SVM (9-fold cross-validated) on raw pixels, PCA components and latent
means of the training digits. On 55,000 x 784 raw pixels the solver decides whether the probe or the
models dominate the run. Times one fit on ``--images`` training digits (raw pixels, and the 20 PCA
components as a stand-in for a latent) and its test accuracy on the 10,000 test digits, per solver:

- liblinear's primal (``LinearSVC(dual=False)``), the solver Table 1 used on 4,500 digits;
- liblinear's dual (``LinearSVC(dual=True)``), at most ``--max-iter`` passes;
- SGD on the hinge loss (``SGDClassifier``), a fixed budget of ``--epochs`` passes, alpha = 1 / (C n).

    python benchmarks/svm_solvers.py --threads 2 --images 55000
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from avae.data import load
from common import base_parser, parse, write_results


def solvers(n: int, seed: int, max_iter: int, epochs: int) -> dict:
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import LinearSVC

    return {"LinearSVC primal (liblinear, dual=False)": lambda: LinearSVC(C=1.0, dual=False, max_iter=2000, random_state=seed),
            f"LinearSVC dual (liblinear, {max_iter} iterations at most)": lambda: LinearSVC(C=1.0, dual=True, max_iter=max_iter,
                                                                                     random_state=seed),
            f"SGD hinge ({epochs} epochs, alpha 1/n)": lambda: SGDClassifier(loss="hinge", alpha=1.0 / n, max_iter=epochs,
                                                                             tol=None, random_state=seed)}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=15)
    args = parse(p)
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    train = load("mnist", "train", data_dir=args.data_dir, holdout="embedded", pad_to=None).take(args.images, args.seed)
    test = load("mnist", "test", data_dir=args.data_dir, pad_to=None)
    x, y = train.images.flatten(1).numpy(), train.labels.numpy()
    xt, yt = test.images.flatten(1).numpy(), test.labels.numpy()
    pca = PCA(20, random_state=args.seed).fit(x)
    scaler = StandardScaler().fit(pca.transform(x))
    features = {"raw pixels (784)": (x, xt), "PCA(20), standardised": (scaler.transform(pca.transform(x)),
                                                                     scaler.transform(pca.transform(xt)))}
    rows = []
    for label, (a, at) in features.items():
        for name, make in solvers(len(a), args.seed, args.max_iter, args.epochs).items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                start = time.perf_counter()
                model = make().fit(a, y)
                seconds = time.perf_counter() - start
            converged = not any("converge" in str(w.message) for w in caught)
            rows.append({"features": label, "solver": name, "training digits": len(a), "fit seconds": round(seconds, 1),
                         "converged": converged, "test accuracy %": round(100 * float(np.mean(model.predict(at) == yt)), 2)})
            print(rows[-1], flush=True)
    write_results("svm_solvers", rows, args.out, "Linear-SVM solvers for Table 1 on full MNIST (one fit each)")


if __name__ == "__main__":
    main()
