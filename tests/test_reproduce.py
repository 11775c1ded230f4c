"""`avae reproduce affine-vae` end to end with a test-only preset (same code path, tiny sizes)."""
import json

import numpy as np

from avae.cli import main
from avae.evaluate.reproduce import PRESETS, AffinePreset, _verdict, render_report, reproduce_affine_vae

TINY = AffinePreset("test", train_images=128, epochs=1, transopt_epochs=2, train_restarts=2, train_steps=1,
                    train_warm_start=True, latent_sizes=(2,), latent_seeds=1, latent_epochs=1, latent_test_images=20,
                    test_images=12, degrees="0:90:90", sweep_method="coarse-to-fine", eval_restarts=2, eval_steps=1,
                    batch_size=64)


def test_reproduce_writes_every_experiment_and_reuses_models(mnist_test_dir, tmp_path):
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
    # the report can be re-rendered from the saved results alone
    (tmp_path / "report.md").unlink()
    render_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    # a second run reuses the trained models instead of training again
    stamp = (tmp_path / "models" / "L8-plain" / "checkpoint.pt").stat().st_mtime_ns
    reproduce_affine_vae(TINY, tmp_path, data_dir=mnist_test_dir, progress=False)
    assert (tmp_path / "models" / "L8-plain" / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_presets_scale_up():
    quick, standard, paper = PRESETS["quick"], PRESETS["standard"], PRESETS["paper"]
    assert quick.test_images < standard.test_images and paper.test_images is None
    assert paper.epochs == 200 and paper.batch_size == 256 and (paper.train_restarts, paper.train_steps) == (20, 10)


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
