"""`avae reproduce affine-vae` end to end with a test-only preset (same code path, tiny sizes)."""
import json
from dataclasses import replace

import numpy as np

from avae.cli import main
from avae.evaluate.reproduce import PRESETS, AffinePreset, _verdict, render_report, reproduce_affine_vae

TINY = AffinePreset("test", train_images=128, epochs=1, transopt_epochs=2, train_restarts=2, train_steps=1,
                    train_warm_start=True, latent_sizes=(2,), latent_seeds=1, latent_epochs=1, latent_test_images=20,
                    test_images=12, degrees="0:90:90", sweep_method="amortized", eval_restarts=2, eval_steps=1,
                    batch_size=64, affine_method="amortized", affine_polish=1, pose_net_iterations=3)


def test_reproduce_writes_every_experiment_and_reuses_models(mnist_test_dir, tmp_path, monkeypatch):
    from avae.align import amortized

    # the pose networks' one-off canonical search, cut to a token size for speed (same code path)
    for pose in ("rotation", "affine"):
        monkeypatch.setitem(amortized.CANONICAL_SEARCH, pose, {"restarts": 2, "steps": 1, "lr": 0.01})
    summary = reproduce_affine_vae(TINY, tmp_path, data_dir=mnist_test_dir, progress=False)
    for name in ("report.md", "metrics.json", "fig3_loss_vs_rotation.png", "fig4_latent_size.png", "fig5_regimes.png",
                 "fig6_affine_reconstructions.png", "fig7_pose_histograms_1_6_9.png", "fig8_pose_histograms_all.png",
                 "pose_concentration.csv", "latent_size.csv"):
        assert (tmp_path / name).is_file(), name
    assert [r["model"] for r in summary["table1"]][2:] == [
        "AVAE, single orientation (X_sub)", "AVAE, random perturbations (X_full)", "AVAE, transformation-optimized"]
    # alignment never loses against the same model without it
    sweeps = summary["rotation_sweeps"]
    assert all(s["average_loss"]["avae"] <= s["average_loss"]["vae"] + 1e-6 for s in sweeps.values())
    # one angle per training image per epoch, and the concentration table covers every class and epoch
    poses = np.load(tmp_path / "models" / "L8-transform-optimized" / "pose_angles.npz")
    assert poses["angles"].shape == (2, 128)
    assert len(summary["pose_concentration"]) == 2 * 10
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["preset"]["name"] == "test" and metrics["test_data"]["n_images"] == 12
    report = (tmp_path / "report.md").read_text()
    assert "preset `test`" in report and "12 digits of the real MNIST test set" in report
    assert "method `amortized`" in report and "trained 3 steps" in report and "## Run time" in report
    # amortized alignment trained one pose network per model and pose, beside the model
    nets = sorted(p.relative_to(tmp_path / "models").as_posix() for p in (tmp_path / "models").glob("*/pose-net-*.pt"))
    assert nets == ["L8-plain/pose-net-affine.pt", "L8-plain/pose-net-rotation.pt", "L8-random-rotation/pose-net-rotation.pt",
                    "L8-transform-optimized/pose-net-affine.pt", "L8-transform-optimized/pose-net-rotation.pt"]
    assert summary["affine"]["plain"]["align"]["polish"] == 1
    assert all(a["mean_loss"]["avae"] <= a["mean_loss"]["vae"] + 1e-6 for a in summary["affine"].values())
    # the report can be re-rendered from the saved results alone
    (tmp_path / "report.md").unlink()
    render_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    # a second run reuses the trained models instead of training again
    stamps = {p: p.stat().st_mtime_ns for p in [tmp_path / "models" / "L8-plain" / "checkpoint.pt",
                                                 tmp_path / "models" / "L8-plain" / "pose-net-rotation.pt"]}
    reproduce_affine_vae(TINY, tmp_path, data_dir=mnist_test_dir, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_presets_scale_up():
    quick, standard, paper = PRESETS["quick"], PRESETS["standard"], PRESETS["paper"]
    # standard and paper use the whole test set
    assert quick.test_images < 10_000 and standard.test_images is None and paper.test_images is None
    assert paper.sweep_method == paper.affine_method == "search"
    assert paper.epochs == 200 and paper.batch_size == 256 and (paper.train_restarts, paper.train_steps) == (20, 10)


def test_presets_reject_settings_that_cannot_run():
    import pytest

    from avae.errors import AvaeError
    with pytest.raises(AvaeError, match="affine_method"):
        replace(TINY, affine_method="coarse-to-fine")
    with pytest.raises(AvaeError, match="pose_net_iterations"):
        replace(TINY, pose_net_iterations=0)


def test_reproduce_needs_the_test_set(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AVAE_DATA_DIR", raising=False)
    assert main(["reproduce", "affine-vae", "--out", str(tmp_path / "r")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_report_says_with_numbers_why_transformation_optimized_training_did_not_win():
    table1 = [{"model": "VAE a", "average loss": 41.0}, {"model": "VAE b", "average loss": 34.0},
              {"model": "AVAE, single orientation (X_sub)", "average loss": 24.8},
              {"model": "AVAE, random perturbations (X_full)", "average loss": 30.9},
              {"model": "AVAE, transformation-optimized", "average loss": 26.7}]
    summary = {"table1": table1, "training_seconds_per_epoch": {"plain": 13.0, "transform-optimized": 44.0},
               "pose_concentration": [{"epoch": 15, "class": c, "circular variance": 0.5, "circular variance (2θ)": 0.3}
                                      for c in range(10)]}
    preset = {"transopt_epochs": 15, "epochs": 20, "train_restarts": 2, "train_steps": 1, "train_warm_start": True}
    text = _verdict(summary, preset, 4500)
    assert "does **not** win" in text and "+7.7 %" in text and "15 epochs" in text and "0.30" in text
    table1[4]["average loss"] = 20.0
    assert "as in the paper" in _verdict(summary, preset, 4500)
