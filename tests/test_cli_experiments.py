"""Happy paths of the experiment commands on tiny real slices: every promised output is written."""
import csv
import json

import numpy as np
import pytest

import torch

from avae.cli import main
from avae.data import load, random_affine, rotated
from avae.evaluate import oracle_loss
from avae.train import checkpoint

PRETRAINED = str(checkpoint.pretrained("vae-L8"))
FAST = ["--restarts", "8", "--steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory):
    from avae.data import load

    d = load("mnist-embedded", "val", pad_to=None, limit=6)
    path = tmp_path_factory.mktemp("npy") / "six.npy"
    np.save(path, (d.images[:, 0].numpy() * 255).astype("uint8"))  # 28x28, padded by align
    return path


def test_align_writes_poses_images_and_grid(digits_npy, tmp_path, capsys):
    out = tmp_path / "al"
    assert main(["align", "--checkpoint", PRETRAINED, "--images", str(digits_npy), "--pose", "affine",
                 "--out", str(out), *FAST]) == 0
    rows = list(csv.DictReader(open(out / "poses.csv")))
    assert len(rows) == 6 and {"angle", "shear", "log_sx", "log_sy", "degrees"} <= set(rows[0])
    assert all(float(r["loss"]) <= float(r["identity_loss"]) + 1e-3 for r in rows)
    # and it does align: straightening upright digits' slant lowers the total loss (an identity-returning
    # search would leave it unchanged)
    identity, found = (sum(float(r[k]) for r in rows) for k in ("identity_loss", "loss"))
    assert found < (1 - 0.005) * identity
    saved = np.load(out / "aligned.npz")
    assert saved["aligned"].shape == (6, 1, 40, 40) and saved["pose"].shape == (6, 4)
    assert (out / "alignment.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["align"]["restarts"] == 8


def test_rotation_sweep_and_affine_write_reports(mnist_test_dir, tmp_path, capsys):
    common = ["--checkpoint", PRETRAINED, "--data", "mnist", "--data-dir", str(mnist_test_dir), "--images", "8", *FAST]
    assert main(["evaluate", "rotation-sweep", "--degrees", "0,90", "--out", str(tmp_path / "s"), *common]) == 0
    for name in ("report.md", "metrics.json", "rotation_sweep.csv", "fig3_loss_vs_rotation.png",
                 "fig6_affine_reconstructions.png"):
        assert (tmp_path / "s" / name).is_file()
    summary = json.loads((tmp_path / "s" / "metrics.json").read_text())["summary"]
    assert summary["degrees"] == [0.0, 90.0] and summary["n_images"] == 8 and summary["resampling"] == "fair"
    # the values, against direct computations on the same eight digits
    rows = {(float(r["angle"]), r["method"]): float(r["mean"]) for r in csv.DictReader(open(tmp_path / "s" / "rotation_sweep.csv"))}
    model = checkpoint.load(PRETRAINED)
    digits = load("mnist", "test", data_dir=mnist_test_dir).take(8, 0)
    upright, truth0 = rotated(digits, 0.0)
    turned, truth90 = rotated(digits, 90.0)
    with torch.no_grad():
        plain = model.loss(upright, sample=False)["loss"].mean().item()
    assert rows[(0.0, "vae")] == pytest.approx(plain, rel=1e-4)  # 0 degrees: the plain VAE on the same digits
    assert rows[(0.0, "oracle")] == pytest.approx(plain, rel=1e-4)  # the identity's inverse is the identity
    assert rows[(90.0, "oracle")] == pytest.approx(oracle_loss(model, turned, truth90).mean().item(), rel=1e-4)
    # alignment finds the turn back (an identity-returning search would leave the 90-degree loss as it is)
    assert rows[(90.0, "avae")] < 0.85 * rows[(90.0, "vae")]
    assert main(["evaluate", "affine", "--out", str(tmp_path / "a"), *common]) == 0
    assert "Alignment lowers the mean loss by" in (tmp_path / "a" / "report.md").read_text()
    affine = {r["method"]: float(r["mean"]) for r in csv.DictReader(open(tmp_path / "a" / "affine.csv"))}
    perturbed, truth = random_affine(digits, seed=0)
    with torch.no_grad():
        assert affine["vae"] == pytest.approx(model.loss(perturbed, sample=False)["loss"].mean().item(), rel=1e-4)
    assert affine["oracle"] == pytest.approx(oracle_loss(model, perturbed, truth).mean().item(), rel=1e-4)
    assert affine["avae"] < 0.9 * affine["vae"]
    assert main(["evaluate", "rotation-sweep", "--method", "coarse-to-fine", "--steps", "0", "--degrees", "45",
                 "--out", str(tmp_path / "c"), "--quiet", *common[:-len(FAST)]]) == 0
    assert "coarse-to-fine" in (tmp_path / "c" / "report.md").read_text()


def test_train_pose_net_then_amortized_alignment(tmp_path, mnist_test_dir, capsys):
    net = tmp_path / "pose-net-rotation.pt"
    assert main(["train-pose-net", "--checkpoint", PRETRAINED, "--digits", "16", "--iterations", "5",
                 "--out", str(net), "--quiet"]) == 0
    assert checkpoint.read(net)["model"] == "pose-net"
    assert main(["evaluate", "rotation-sweep", "--checkpoint", PRETRAINED, "--data", "mnist", "--data-dir",
                 str(mnist_test_dir), "--images", "4", "--degrees", "60", "--method", "amortized", "--pose-net",
                 str(net), "--turns", "4", "--steps", "1", "--out", str(tmp_path / "am"), "--quiet"]) == 0
    align = json.loads((tmp_path / "am" / "metrics.json").read_text())["summary"]["align"]
    assert align["method"] == "amortized" and "pose network" in align["pose_net"] and align["turns"] == 4
    # a pose network is not a model to evaluate
    assert main(["evaluate", "--checkpoint", str(net), "--data", "mnist", "--data-dir", str(mnist_test_dir)]) == 2
    assert "pose network" in capsys.readouterr().err
