"""The ``avae`` command: one happy path, and every input a person can get wrong.

A user error must end with exit code 2, exactly one stderr line ``avae: error: ...`` that names
the offending file or option, no traceback, and no partial output.
"""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import avae
from avae.cli import main
from avae.data import write_idx

EPOCH = ["--epochs", "1", "--batch-size", "64", "--quiet"]


# ----------------------------------------------------------------------------- helpers
def run(capsys, *argv):
    """``avae ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_error(result, *names) -> str:
    """Assert a clean user error naming every one of ``names``; returns the message."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, err
    assert lines[0].startswith("avae: error: "), lines[0]
    for name in names:
        assert str(name) in lines[0], f"{name} not named in: {lines[0]}"
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def absent_or_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    """300 real digits as a uint8 (N, 28, 28) .npz with labels (split 90/10 by the CLI)."""
    d = avae.data.load("mnist-embedded", "all", pad_to=None, limit=300)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, images=(d.images[:, 0] * 255).round().numpy().astype(np.uint8), labels=d.labels.numpy())
    return path


@pytest.fixture(scope="module")
def trained_run(digits_npz, tmp_path_factory) -> Path:
    """A one-epoch conv VAE (latent 4) trained by the CLI on ``digits_npz``."""
    run_dir = tmp_path_factory.mktemp("runs") / "vae"
    code = main(["train", "--data", str(digits_npz), "--latent", "4", "--out", str(run_dir), *EPOCH])
    assert code == 0
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, for tests that try to change it."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture
def edited_checkpoint(trained_run, tmp_path):
    """Factory: a copy of the trained checkpoint with ``edit(payload)`` applied."""

    def make(edit) -> Path:
        payload = torch.load(trained_run / "checkpoint.pt", map_location="cpu", weights_only=True)
        edit(payload)
        path = tmp_path / "edited" / "checkpoint.pt"
        path.parent.mkdir(exist_ok=True)
        torch.save(payload, path)
        return path

    return make


def save_npy(path: Path, array) -> Path:
    np.save(path, array)
    return path


# ----------------------------------------------------------------------------- happy path
def test_train_evaluate_load(trained_run, digits_npz, tmp_path, capsys):
    names = {p.name for p in trained_run.iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.json", "loss_curve.png"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"history", "data", "versions", "seed"} <= set(metrics)
    assert len(metrics["history"]) == 1 and metrics["seed"] == 0
    assert metrics["data"]["data"] == str(digits_npz) and metrics["data"]["split"] == "train"
    n_train, n_val = metrics["data"]["n_images"], metrics["validation_data"]["n_images"]
    assert n_train + n_val == 300 and 25 <= n_val <= 35  # a stratified 90/10 split of the file
    assert json.loads((trained_run / "config.json").read_text())["config"]["latent"] == 4

    out = tmp_path / "eval"
    code, stdout, err = run(capsys, "evaluate", "--checkpoint", trained_run, "--data", digits_npz,
                            "--split", "test", "--out", out, "--quiet")
    assert code == 0, err
    assert "loss per image on 300" in stdout
    result = json.loads((out / "metrics.json").read_text())
    loss = result["summary"]["loss"]
    assert loss["n"] == 300 and math.isfinite(loss["mean"]) and loss["mean"] > 0
    assert (out / "report.md").read_text().strip()
    # the same numbers computed directly: summed squared error / (2 variance) + KL at the posterior mean,
    # per image, then mean and standard error over the 300 images
    model = avae.load(trained_run)
    images = avae.data.load(str(digits_npz), "test").images
    with torch.no_grad():
        mu, logvar = model.encode(images)
        recon = model.decode(mu)
    per_image = ((recon - images) ** 2).sum((1, 2, 3)) + 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    assert loss["mean"] == pytest.approx(per_image.double().mean().item(), rel=1e-4)
    assert loss["sem"] == pytest.approx((per_image.double().std() / 300 ** 0.5).item(), rel=1e-3)
    assert result["summary"]["kl"]["mean"] == pytest.approx(
        0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).double().mean().item(), rel=1e-4)

    model = avae.load(trained_run)
    assert not model.training and model.config.latent == 4 and model.config.image_size == 40
    assert avae.load(trained_run / "checkpoint.pt").state_dict().keys() == model.state_dict().keys()


def test_train_resume_continues_the_run(run_copy, digits_npz, capsys):
    args = ["train", "--data", digits_npz, "--latent", "4", "--out", run_copy, "--batch-size", "64", "--quiet"]
    code, _, err = run(capsys, *args, "--epochs", "2", "--resume")
    assert code == 0, err
    history = json.loads((run_copy / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]


# ----------------------------------------------------------------------------- 1. bad IDX files
def _train_mnist(capsys, data_dir, out):
    return run(capsys, "train", "--data", "mnist", "--data-dir", data_dir, "--out", out, *EPOCH)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(write_fake_mnist, tmp_path, capsys, gz):
    write_fake_mnist(tmp_path / "mnist", gz=gz)
    images = tmp_path / "mnist" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    user_error(_train_mnist(capsys, tmp_path / "mnist", tmp_path / "out"), images)
    assert not (tmp_path / "out").exists()


def test_idx_wrong_magic(write_fake_mnist, tmp_path, capsys):
    write_fake_mnist(tmp_path / "mnist", gz=False)
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x12\x34" + labels.read_bytes()[2:])
    message = user_error(_train_mnist(capsys, tmp_path / "mnist", tmp_path / "out"), labels)
    assert "magic" in message
    assert not (tmp_path / "out").exists()


def test_idx_image_label_count_mismatch(write_fake_mnist, tmp_path, capsys):
    write_fake_mnist(tmp_path / "mnist", gz=False)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.arange(59, dtype=np.uint8) % 10)
    message = user_error(_train_mnist(capsys, tmp_path / "mnist", tmp_path / "out"),
                         tmp_path / "mnist" / "train-images-idx3-ubyte")
    assert "60" in message and "59" in message
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 2. missing data
def test_empty_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    user_error(_train_mnist(capsys, tmp_path / "empty", tmp_path / "out"), tmp_path / "empty")
    assert not (tmp_path / "out").exists()
    user_error(run(capsys, "train", "--data", tmp_path / "empty", "--out", tmp_path / "out", *EPOCH),
               tmp_path / "empty")
    assert not (tmp_path / "out").exists()


def test_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    user_error(_train_mnist(capsys, missing, tmp_path / "out"), missing)
    user_error(run(capsys, "train", "--data", missing, "--out", tmp_path / "out", *EPOCH), missing)
    assert not (tmp_path / "out").exists()


def test_mnist_without_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AVAE_DATA_DIR", raising=False)
    message = user_error(run(capsys, "train", "--data", "mnist", "--out", tmp_path / "out", *EPOCH), "--data-dir")
    assert "AVAE_DATA_DIR" in message
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 3. non-finite pixels
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(trained_run, tmp_path, capsys, bad):
    images = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    images[3, 10, 10] = bad
    path = save_npy(tmp_path / "bad.npy", images)
    message = user_error(run(capsys, "evaluate", "--checkpoint", trained_run, "--data", path,
                             "--out", tmp_path / "eval", "--quiet"), path)
    assert "image 3" in message
    message = user_error(run(capsys, "align", "--checkpoint", trained_run, "--images", path,
                             "--out", tmp_path / "align", "--quiet"), path)
    assert "image 3" in message
    assert not (tmp_path / "eval").exists() and not (tmp_path / "align").exists()


# ----------------------------------------------------------------------------- 4. wrong image shape
@pytest.mark.parametrize("kind", ["48x48", "rgb"])
def test_images_that_do_not_fit_the_checkpoint(trained_run, tmp_path, capsys, kind):
    rng = np.random.default_rng(0)
    shape = (4, 48, 48) if kind == "48x48" else (4, 28, 28, 3)
    path = save_npy(tmp_path / f"{kind}.npy", rng.integers(0, 256, shape, dtype=np.uint8))
    user_error(run(capsys, "evaluate", "--checkpoint", trained_run, "--data", path,
                   "--out", tmp_path / "eval", "--quiet"), path)
    user_error(run(capsys, "align", "--checkpoint", trained_run, "--images", path,
                   "--out", tmp_path / "align", "--quiet"), path)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "align").exists()


def test_unpadded_images_do_not_fit_the_checkpoint(trained_run, digits_npz, tmp_path, capsys):
    message = user_error(run(capsys, "evaluate", "--checkpoint", trained_run, "--data", digits_npz,
                             "--pad", "0", "--out", tmp_path / "eval", "--quiet"), digits_npz)
    assert "(1, 28, 28)" in message and "(1, 40, 40)" in message
    assert not (tmp_path / "eval").exists()


# ----------------------------------------------------------------------------- 5. bad checkpoints
def _evaluate(capsys, checkpoint, data, out):
    return run(capsys, "evaluate", "--checkpoint", checkpoint, "--data", data, "--out", out, "--quiet")


def test_random_bytes_checkpoint(digits_npz, tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    user_error(_evaluate(capsys, path, digits_npz, tmp_path / "eval"), path)
    user_error(run(capsys, "align", "--checkpoint", path, "--images", digits_npz, "--out", tmp_path / "align",
                   "--quiet"), path)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "align").exists()


def test_torch_file_without_format_marker(trained_run, digits_npz, tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": avae.load(trained_run).state_dict()}, path)
    message = user_error(_evaluate(capsys, path, digits_npz, tmp_path / "eval"), path)
    assert "format marker" in message
    assert not (tmp_path / "eval").exists()


def test_folder_without_checkpoint(digits_npz, tmp_path, capsys):
    (tmp_path / "not-a-run").mkdir()
    user_error(_evaluate(capsys, tmp_path / "not-a-run", digits_npz, tmp_path / "eval"), tmp_path / "not-a-run")
    assert not (tmp_path / "eval").exists()


def _set(key, value):
    return lambda payload: payload.__setitem__(key, value)


def _set_config(key, value):
    return lambda payload: payload["config"].__setitem__(key, value)


@pytest.mark.parametrize("edit, names", [
    (_set("model", "gan"), ["gan"]),  # a model avae does not know
    (_set_config("wings", 2), ["wings"]),  # a config field the model does not have
    (_set_config("latent", "four"), ["latent"]),  # a config field of the wrong type
    (_set_config("latent", 6), ["weights do not fit"]),  # weights of another latent size
    (_set("state_dict", {}), ["weights do not fit"]),
], ids=["other-model", "unknown-field", "wrong-type", "weights-mismatch", "no-weights"])
def test_checkpoint_that_does_not_hold_together(edited_checkpoint, digits_npz, tmp_path, capsys, edit, names):
    path = edited_checkpoint(edit)
    user_error(_evaluate(capsys, path, digits_npz, tmp_path / "eval"), path, *names)
    assert not (tmp_path / "eval").exists()


# ----------------------------------------------------------------------------- 6. bad --out
def test_out_below_a_file(trained_run, digits_npz, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("keep me")
    out = tmp_path / "file.txt" / "out"
    user_error(run(capsys, "train", "--data", digits_npz, "--out", out, *EPOCH), "--out", out)
    user_error(run(capsys, "evaluate", "--checkpoint", trained_run, "--data", digits_npz, "--images", "5",
                   "--out", out, "--quiet"), "--out", out)
    user_error(run(capsys, "align", "--checkpoint", trained_run, "--images", digits_npz, "--out", out,
                   "--quiet"), "--out", out)
    assert (tmp_path / "file.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_out_below_a_file_nested(digits_npz, tmp_path, capsys):
    """Folders created on the way to an unwritable --out are removed again."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "file.txt").write_text("")
    out = tmp_path / "a" / "file.txt" / "b" / "c"
    user_error(run(capsys, "train", "--data", digits_npz, "--out", out, *EPOCH), out)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["file.txt"]


def test_out_is_an_existing_file(trained_run, digits_npz, tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("keep me")
    user_error(run(capsys, "train", "--data", digits_npz, "--out", out, *EPOCH), "--out", out)
    user_error(run(capsys, "evaluate", "--checkpoint", trained_run, "--data", digits_npz, "--images", "5",
                   "--out", out, "--quiet"), "--out", out)
    user_error(run(capsys, "align", "--checkpoint", trained_run, "--images", digits_npz, "--out", out,
                   "--quiet"), "--out", out)
    assert out.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


# ----------------------------------------------------------------------------- 7, 8. existing runs
def test_train_into_an_existing_run_needs_resume(run_copy, digits_npz, capsys):
    before = snapshot(run_copy)
    message = user_error(run(capsys, "train", "--data", digits_npz, "--latent", "4", "--out", run_copy, *EPOCH),
                         run_copy / "checkpoint.pt")
    assert "--resume" in message
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("change", [["--latent", "5"], ["--lr", "0.01"], ["--net", "mlp"], ["--seed", "1"]],
                         ids=lambda c: c[0])
def test_resume_with_different_settings(run_copy, digits_npz, capsys, change):
    before = snapshot(run_copy)
    options = {"--latent": "4", **dict([change])}
    argv = ["train", "--data", digits_npz, "--out", run_copy, "--resume", "--epochs", "2", "--batch-size", "64",
            "--quiet", *[x for kv in options.items() for x in kv]]
    user_error(run(capsys, *argv), run_copy / "checkpoint.pt", "--resume")
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------- the real command
def test_python_m_avae_reports_a_user_error(digits_npz, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    proc = subprocess.run(
        [sys.executable, "-m", "avae", "evaluate", "--checkpoint", str(bad), "--data", str(digits_npz),
         "--out", str(tmp_path / "eval"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("avae: error:") and str(bad) in lines[0], proc.stderr
    assert not (tmp_path / "eval").exists()


# ----------------------------------------------------------------------------- bad options
def test_bad_option_after_out_was_created_leaves_no_folders(trained_run, digits_npz, tmp_path, capsys):
    """--out folders the command created are removed again when it then fails."""
    out = tmp_path / "new" / "eval"
    user_error(run(capsys, "evaluate", "rotation-sweep", "--checkpoint", trained_run, "--data", digits_npz,
                   "--images", "4", "--degrees", "0:ninety:10", "--out", out, "--quiet"), "--degrees")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    out = tmp_path / "new" / "run"
    user_error(run(capsys, "train", "--data", digits_npz, "--latent", "0", "--out", out, *EPOCH), "latent")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_training_option(digits_npz, tmp_path, capsys):
    user_error(run(capsys, "train", "--data", digits_npz, "--out", tmp_path / "run", "--epochs", "0",
                   "--batch-size", "64", "--quiet"), "epochs")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- every model's options
@pytest.mark.parametrize("argv,expected", [
    (["--model", "tvae", "--transformer", "tps", "--tps-grid", "4", "--prior", "full", "--pose-rank", "5"],
     {"transformer": "tps", "tps_grid": 4, "prior": "full", "rank": 5, "net": "mlp", "likelihood": "bernoulli",
      "image_size": 28}),
    (["--model", "dtvae", "--transformer", "affine5", "--prior", "diagonal", "--localization-hidden", "32",
      "--likelihood", "gaussian", "--variance", "0.25"],
     {"transformer": "affine5", "prior": "diagonal", "localization_hidden": 32, "likelihood": "gaussian",
      "variance": 0.25}),
    (["--model", "vae", "--net", "mlp", "--optimizer", "adadelta", "--lr", "1.0"],
     {"net": "mlp", "likelihood": "gaussian", "image_size": 40}),
    (["--model", "autoencoding-vae", "--regime", "recolor", "--avae", "--rho", "0.8", "--avae-target", "sample",
      "--smooth", "--se-epsilon", "0.1", "--se-steps", "1", "--se-objective", "w2"],
     {"channels": 3, "image_size": 28, "avae": True, "rho": 0.8, "avae_target": "sample", "smooth": True,
      "se_epsilon": 0.1, "se_steps": 1, "se_objective": "w2"}),
])
def test_model_options_reach_the_checkpoint_config(digits_npz, tmp_path, capsys, argv, expected):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", digits_npz, "--latent", "3", "--out", out, "--epochs", "1",
                       "--batch-size", "512", "--quiet", *argv)  # one step on 270 real digits
    assert code == 0, err
    config = avae.train.checkpoint.read(out)["config"]
    assert {k: config[k] for k in expected} == expected and config["latent"] == 3
    model = avae.load(out)
    assert model.name == argv[1]
    train_config = avae.train.checkpoint.read(out)["train_config"]
    assert train_config["optimizer"] == ("adadelta" if "adadelta" in argv else "adam")
    assert train_config["regime"] == ("recolor" if "recolor" in argv else "plain")


@pytest.mark.parametrize("argv,names", [
    (["--model", "vae", "--prior", "full"], ["--prior full", "tvae or dtvae", "--model vae"]),
    (["--model", "autoencoding-vae", "--transformer", "tps"], ["--transformer tps", "--model autoencoding-vae"]),
    (["--model", "tvae", "--localization-hidden", "8"], ["--localization-hidden 8", "dtvae"]),
    (["--model", "tvae", "--pose-rank", "3"], ["--pose-rank 3", "--prior full", "--prior none"]),
    (["--model", "vae", "--smooth"], ["--smooth", "--model autoencoding-vae", "--model vae"]),
    (["--model", "autoencoding-vae", "--se-steps", "3"], ["--se-steps", "--smooth"]),
    (["--model", "autoencoding-vae", "--avae-target", "sample"], ["--avae-target", "--avae"]),
])
def test_options_the_model_lacks_are_refused_before_anything_is_written(digits_npz, tmp_path, capsys, argv, names):
    out = tmp_path / "run"
    user_error(run(capsys, "train", "--data", digits_npz, "--out", out, *EPOCH, *argv), *names)
    assert not out.exists()


def test_autoencoding_vae_trains_on_a_folder_of_rgb_images(tmp_path, capsys):
    """CelebA cannot be had here; a user with it points --data at its folder. A tiny folder of RGB PNGs
    (32 x 32) trains the smooth AVAE, and the checkpoint has 3 channels of that size."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "autoencoding-vae", "--avae", "--smooth", "--se-steps", "1",
                       "--data", folder, "--latent", "4", "--out", out, "--epochs", "1", "--batch-size", "8", "--quiet")
    assert code == 0, err
    config = avae.train.checkpoint.read(out)["config"]
    assert (config["channels"], config["image_size"], config["avae"], config["smooth"]) == (3, 32, True, True)
    user_error(run(capsys, "train", "--model", "autoencoding-vae", "--regime", "recolor", "--data", folder,
                   "--out", tmp_path / "again", "--epochs", "1", "--quiet"), "--regime recolor", "3 channels")
    assert not (tmp_path / "again").exists()
