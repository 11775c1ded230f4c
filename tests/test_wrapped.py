"""Bring your own VAE: wrapped encoder/decoder pairs and pythae models under avae's protocol, and
pose-invariant embeddings."""
import pytest
import torch
from torch import nn

import avae
from avae.align import METHODS, align
from avae.data import ASYMMETRIC_DIGITS, load, rotated
from avae.errors import AvaeError
from avae.models import from_pythae, wrap
from avae.nets.pose import PoseNet, PoseNetConfig
from avae.train import checkpoint


class Encoder(nn.Module):
    def __init__(self, latent=4):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 2 * latent))

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


def tiny_pair(latent=4):
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 28 * 28), nn.Sigmoid())
    return Encoder(latent), decoder


@pytest.fixture(scope="module")
def digits28():
    return load("mnist-embedded", "val", pad_to=None, limit=12).images


@pytest.mark.parametrize("method", METHODS)
def test_a_wrapped_pair_runs_every_alignment_method(method, digits28):
    model = wrap(*tiny_pair(), latent=4, image_shape=(1, 28, 28), likelihood="bernoulli")
    x = rotated(digits28, seed=1)[0]
    options = {"restarts": 3, "steps": 1} if method == "search" else {"steps": 1}
    if method in ("amortized", "stn"):
        torch.manual_seed(0)
        options["pose_net"] = PoseNet(PoseNetConfig(pose="rotation", image_size=28))
    if method == "coarse-to-fine":
        options["levels"] = (4, 2)
    result = align(model, x, "rotation", method=method, **options)
    assert result.loss.shape == (12,) and torch.isfinite(result.loss).all()
    if method != "stn":
        assert (result.loss <= result.identity_loss + 1e-4).all()
    with torch.no_grad():  # the identity loss is the wrapped model's own loss at the posterior mean
        plain = model.loss(x, sample=False)["loss"]
    if method != "stn":
        assert torch.allclose(result.identity_loss, plain, rtol=1e-4, atol=1e-3)


def test_a_model_of_another_input_shape_is_refused(digits28):
    model = wrap(*tiny_pair(), latent=4, image_shape=(1, 28, 28))
    padded = load("mnist-embedded", "val", limit=4).images  # 40x40
    with pytest.raises(AvaeError, match=r"images of shape \(1, 40, 40\).*expects \(1, 28, 28\)"):
        align(model, padded, "rotation", restarts=2, steps=0)
    with pytest.raises(AvaeError, match="square images"):
        wrap(*tiny_pair(), latent=4, image_shape=(1, 28, 32))


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_a_pythae_models_loss_is_its_own_loss_terms(loss, digits28):
    """avae's per-image loss of a wrapped pythae VAE, at the posterior mean, equals pythae's own
    recon_loss + KLD with z at the mean (its loss_function), image by image: mse is the Gaussian of
    variance 1 (0.5 * summed squared error), bce the Bernoulli."""
    pythae = pytest.importorskip("pythae.models")
    torch.manual_seed(0)
    theirs = pythae.VAE(pythae.VAEConfig(input_dim=(1, 28, 28), latent_dim=6, reconstruction_loss=loss)).eval()
    ours = from_pythae(theirs)
    assert (ours.config.likelihood, ours.config.variance) == {"mse": ("gaussian", 1.0), "bce": ("bernoulli", 1.0)}[loss]
    x = digits28
    with torch.no_grad():
        out = theirs.encoder(x)
        mu, log_var = out.embedding, out.log_covariance
        per_image = []
        for i in range(len(x)):  # pythae reduces over the batch: one image at a time gives per-image terms
            total, _, _ = theirs.loss_function(theirs.decoder(mu[i : i + 1])["reconstruction"], x[i : i + 1],
                                               mu[i : i + 1], log_var[i : i + 1], mu[i : i + 1])
            per_image.append(total)
        mine = ours.loss(x, sample=False)["loss"]
    torch.testing.assert_close(mine, torch.stack(per_image), rtol=1e-5, atol=1e-4)


def test_embed_with_alignment_reads_rotated_digits_better(mnist_test_dir):
    """Codes of upright training digits as a 5-nearest-neighbour reference; test digits turned uniformly
    in [0, 360): aligned before encoding, they are classified far better than as they are."""
    from sklearn.neighbors import KNeighborsClassifier

    vae = checkpoint.load(checkpoint.pretrained("vae-L8"))
    train = load("mnist-embedded", "train", limit=1000)
    test = load("mnist", "test", data_dir=mnist_test_dir).take(400, 0)
    keep = torch.isin(test.labels, torch.tensor(ASYMMETRIC_DIGITS))
    x, labels = rotated(test.images[keep], seed=2)[0], test.labels[keep]
    knn = KNeighborsClassifier(5).fit(avae.embed(vae, train.images).codes.numpy(), train.labels.numpy())
    plain = avae.embed(vae, x)
    aligned = avae.embed(vae, x, align={"method": "coarse-to-fine", "steps": 0})
    assert plain.pose is None and aligned.pose.shape == (len(x), 1) and aligned.codes.shape == (len(x), 8)
    accuracy = {k: (knn.predict(e.codes.numpy()) == labels.numpy()).mean() for k, e in
                (("plain", plain), ("aligned", aligned))}
    assert accuracy["aligned"] > accuracy["plain"] + 0.25, accuracy


@pytest.fixture(scope="module")
def pythae_folder(tmp_path_factory):
    """An untrained pythae VAE saved by pythae itself (model.save), and 40 real 28x28 digits as .npz."""
    pythae = pytest.importorskip("pythae.models")
    import numpy as np

    root = tmp_path_factory.mktemp("pythae")
    torch.manual_seed(0)
    pythae.VAE(pythae.VAEConfig(input_dim=(1, 28, 28), latent_dim=4)).save(str(root / "vae"))
    d = load("mnist-embedded", "val", pad_to=None, limit=40)
    np.savez(root / "digits.npz", images=(d.images[:, 0] * 255).round().numpy().astype(np.uint8), labels=d.labels.numpy())
    return root / "vae", root / "digits.npz"


def test_the_commands_take_a_pythae_folder_and_keep_out_of_it(pythae_folder, tmp_path, capsys):
    from avae.cli import main

    folder, digits = pythae_folder
    before = sorted(p.name for p in folder.iterdir())
    assert main(["evaluate", "--checkpoint", str(folder), "--data", str(digits), "--split", "test", "--quiet"]) == 0
    assert "loss per image on 40" in capsys.readouterr().out
    assert main(["train-pose-net", "--checkpoint", str(folder), "--data", str(digits), "--digits", "16",
                 "--iterations", "3", "--quiet"]) == 0
    assert (folder.parent / "vae.avae" / "pose-net-rotation.pt").is_file()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the user's folder
    # the pose network beside it serves the amortized method, for align and embed alike
    assert main(["align", "--checkpoint", str(folder), "--images", str(digits), "--method", "amortized",
                 "--steps", "0", "--out", str(tmp_path / "al"), "--quiet"]) == 0
    assert main(["embed", "--checkpoint", str(folder), "--images", str(digits), "--align", "--method", "amortized",
                 "--steps", "0", "--out", str(tmp_path / "em"), "--quiet"]) == 0
    import numpy as np

    saved = np.load(tmp_path / "em" / "codes.npz")
    assert saved["codes"].shape == (40, 4) and saved["poses"].shape == (40, 1) and saved["labels"].shape == (40,)
    assert main(["embed", "--checkpoint", str(folder), "--images", str(digits), "--out", str(tmp_path / "plain"),
                 "--quiet"]) == 0
    assert set(np.load(tmp_path / "plain" / "codes.npz")) == {"codes", "labels"}


def test_a_pythae_folder_without_pythae_is_one_line(pythae_folder, tmp_path, capsys, monkeypatch):
    import sys

    from avae.cli import main

    folder, digits = pythae_folder
    monkeypatch.setitem(sys.modules, "pythae", None)  # as if pythae were not installed
    monkeypatch.setitem(sys.modules, "pythae.models", None)
    assert main(["evaluate", "--checkpoint", str(folder), "--data", str(digits), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a pythae model folder" in err[0] and "pip install 'avae[pythae]'" in err[0]
