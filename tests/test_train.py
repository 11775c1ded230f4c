"""The training loop: exact resume, seeded reproducibility, atomic checkpoints, learning, regimes."""
import math

import pytest
import torch

from avae.models import VAE, VAEConfig
from avae.train import TrainConfig, fit, make_regime
from avae.train import checkpoint

MODEL = {"latent": 4}  # the paper's conv net, small latent


def _config(epochs, seed=0, **kw):
    return TrainConfig(epochs=epochs, batch_size=64, seed=seed, **kw)


@pytest.fixture(scope="module")
def small(tiny_split):
    """128 training and 32 validation digits: two batches of 64 per epoch."""
    train, val = tiny_split
    return train.subset(slice(0, 128)), val.subset(slice(0, 32))


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    """Run dirs: A (2 epochs straight), B (1 epoch, then resumed to 2), C (1 epoch, as B's first),
    D (1 epoch, another seed). Returns the dirs, the models fit returned, and B's first checkpoint."""
    train, val = small
    root = tmp_path_factory.mktemp("runs")
    dirs = {name: root / name for name in "ABCD"}
    models = {
        "A": fit("vae", MODEL, train, val, _config(2), dirs["A"], progress=False),
        "C": fit("vae", MODEL, train, val, _config(1), dirs["C"], progress=False),
        "D": fit("vae", MODEL, train, val, _config(1, seed=1), dirs["D"], progress=False),
    }
    fit("vae", MODEL, train, val, _config(1), dirs["B"], progress=False)
    first_half = checkpoint.read(dirs["B"])
    models["B"] = fit("vae", MODEL, train, val, _config(2), dirs["B"], resume=True, progress=False)
    return dirs, models, first_half


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _val_losses(run_dir):
    return [record["val_loss"]["mean"] for record in checkpoint.read(run_dir)["history"]]


def test_resume_equals_uninterrupted_run(runs):
    dirs, models, first_half = runs
    assert first_half["epoch"] == 1
    a, b = checkpoint.read(dirs["A"]), checkpoint.read(dirs["B"])
    assert a["epoch"] == b["epoch"] == 2
    assert _states_equal(a["state_dict"], b["state_dict"]), "resumed weights differ from the uninterrupted run"
    assert _states_equal(models["A"].state_dict(), models["B"].state_dict())
    # the resumed run really trained in its second epoch (not a no-op resume)
    assert not _states_equal(first_half["state_dict"], b["state_dict"])
    assert _val_losses(dirs["A"]) == _val_losses(dirs["B"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    # the optimizer state (Adam moments, step counts) continues too
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        assert _states_equal(opt_a[key], opt_b[key])


def test_same_seed_identical_other_seed_differs(runs):
    dirs, models, first_half = runs
    b1, c, d = first_half, checkpoint.read(dirs["C"]), checkpoint.read(dirs["D"])
    assert _states_equal(b1["state_dict"], c["state_dict"])
    assert b1["history"][0]["val_loss"] == c["history"][0]["val_loss"]
    assert not _states_equal(c["state_dict"], d["state_dict"])
    assert c["history"][0]["val_loss"]["mean"] != d["history"][0]["val_loss"]["mean"]


def test_checkpoint_written_atomically_and_readable(runs):
    dirs, _, _ = runs
    for run_dir in dirs.values():
        names = sorted(p.name for p in run_dir.iterdir())
        assert names == ["checkpoint.pt", "config.json", "loss_curve.png", "metrics.json"], names
        assert not list(run_dir.glob(".*.tmp"))
    payload = checkpoint.read(dirs["A"])
    assert payload["format"] == checkpoint.FORMAT and payload["model"] == "vae"
    assert payload["config"]["latent"] == 4
    assert payload["train_config"]["epochs"] == 2 and payload["train_config"]["batch_size"] == 64
    assert len(payload["history"]) == 2 and payload["epoch"] == 2
    # plain torch.load with weights_only=True, as documented
    raw = torch.load(dirs["A"] / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == checkpoint.FORMAT
    model = checkpoint.load(dirs["A"], expect="vae")
    assert not model.training
    assert _states_equal(model.state_dict(), payload["state_dict"])


def test_export_ships_the_weights_without_the_optimizer(runs, tmp_path):
    dirs, _, _ = runs
    (dirs["A"] / "pose-net-rotation.json").write_text("{}")  # a pose network's record travels with the model
    shipped = checkpoint.export(dirs["A"], tmp_path / "shipped")
    (dirs["A"] / "pose-net-rotation.json").unlink()
    payload, original = checkpoint.read(shipped), checkpoint.read(dirs["A"])
    assert "optimizer" in original and "optimizer" not in payload
    assert set(payload) - {"path"} == {"format", "format_version", "model", "config", "state_dict", *checkpoint.SHIPPED_STATE}
    assert _states_equal(payload["state_dict"], original["state_dict"]) and payload["history"] == original["history"]
    assert sorted(p.name for p in shipped.iterdir()) == ["checkpoint.pt", "config.json", "loss_curve.png", "metrics.json",
                                                         "pose-net-rotation.json"]


def test_resume_from_finished_run_adds_nothing(runs, small):
    """Resuming a run that already reached its epochs trains no further and keeps the weights."""
    dirs, _, _ = runs
    train, val = small
    before = checkpoint.read(dirs["A"])["state_dict"]
    model = fit("vae", MODEL, train, val, _config(2), dirs["A"], resume=True, progress=False)
    assert _states_equal(model.state_dict(), before)
    assert _states_equal(checkpoint.read(dirs["A"])["state_dict"], before)


def test_a_checkpoint_older_than_a_config_field_resumes_with_its_default(runs, small, tmp_path):
    """A field added to the model's config after a run began (absent from its checkpoint) counts as its
    default: the run resumes and equals the uninterrupted one; a changed value still refuses."""
    import shutil

    from avae.errors import AvaeError

    dirs, _, _ = runs
    train, val = small
    old = tmp_path / "old"
    shutil.copytree(dirs["C"], old)
    payload = checkpoint.read(old)
    del payload["config"]["output"]  # as if written before the field existed
    torch.save(payload, old / checkpoint.FILENAME)
    with pytest.raises(AvaeError, match="different settings"):
        fit("vae", {**MODEL, "output": "linear"}, train, val, _config(2), old, resume=True, progress=False)
    fit("vae", MODEL, train, val, _config(2), old, resume=True, progress=False)
    assert _states_equal(checkpoint.read(old)["state_dict"], checkpoint.read(dirs["A"])["state_dict"])


def test_a_run_resumes_only_on_the_data_it_began_with(runs, small):
    """A finished run on 128 digits is not taken for a finished run on 64 (one line, nothing trained)."""
    from avae.errors import AvaeError

    dirs, _, _ = runs
    train, val = small
    before = checkpoint.read(dirs["A"])["state_dict"]
    with pytest.raises(AvaeError, match="n_images 128, .*not on .*n_images 64") as err:
        fit("vae", MODEL, train.subset(slice(0, 64)), val, _config(2), dirs["A"], resume=True, progress=False)
    assert "\n" not in str(err.value) and "another --out" in str(err.value)
    assert _states_equal(checkpoint.read(dirs["A"])["state_dict"], before)


def test_training_lowers_the_validation_loss(tiny_split, tmp_path):
    train, val = tiny_split
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0)
    fit("vae", {"latent": 4, "net": "mlp"}, train, val, config, tmp_path / "run", progress=False)
    history = checkpoint.read(tmp_path / "run")["history"]
    val_losses = [r["val_loss"]["mean"] for r in history]
    assert all(math.isfinite(v) for v in val_losses)
    assert val_losses[-1] < val_losses[0], val_losses
    assert history[-1]["train_loss"] < history[0]["train_loss"]


class _Spy:
    """Stands in for a model: records the batch a regime feeds it."""

    def __init__(self):
        self.seen = []

    def loss(self, x, sample=True):
        self.seen.append(x.detach().clone())
        return {"loss": x.flatten(1).sum(1)}


def _fed_batch(regime, x, seed):
    spy = _Spy()
    loss = regime.loss(spy, x, torch.arange(len(x)), 0, torch.Generator().manual_seed(seed))
    assert len(spy.seen) == 1 and loss.shape == (len(x),)
    return spy.seen[0]


def test_plain_regime_feeds_the_batch_unchanged(embedded_digits):
    x = embedded_digits[:8]
    assert torch.equal(_fed_batch(make_regime(TrainConfig(regime="plain")), x, 0), x)


def test_random_rotation_regime_rotates_batches(embedded_digits):
    regime = make_regime(TrainConfig(regime="random-rotation"))
    x = embedded_digits[:32]
    out = _fed_batch(regime, x, 0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    moved = (out - x).abs().flatten(1).sum(1)
    ink = x.flatten(1).sum(1)
    assert (moved > 0.1 * ink).float().mean() > 0.9, "most images should be visibly rotated"
    # a rotation about the centre of a padded digit keeps its ink (up to interpolation blur)
    torch.testing.assert_close(out.flatten(1).sum(1), ink, rtol=0.05, atol=0.5)
    # seeded: the same generator state gives the same angles, another one different angles
    again, other = _fed_batch(regime, x, 0), _fed_batch(regime, x, 1)
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_random_rotation_regime_trains(tiny_split, tmp_path):
    train, val = tiny_split
    model = fit("vae", {"latent": 2, "net": "mlp"}, train.subset(slice(0, 64)), val.subset(slice(0, 16)),
                TrainConfig(epochs=1, batch_size=32, regime="random-rotation"), tmp_path / "rot", progress=False)
    payload = checkpoint.read(tmp_path / "rot")
    assert payload["train_config"]["regime"] == "random-rotation"
    assert math.isfinite(payload["history"][0]["train_loss"])
    torch.manual_seed(0)  # fit seeds the initial weights with config.seed
    initial = VAE(VAEConfig(latent=2, net="mlp")).state_dict()
    assert not _states_equal(initial, model.state_dict()), "no gradient step was taken"


def test_cosine_schedule_sets_each_epochs_learning_rate(small, tmp_path):
    """The optimizer really runs at lr * (1 + cos(pi e / E)) / 2 in epoch e; constant stays at lr."""
    train, val = small
    fit("vae", MODEL, train, val, _config(3, lr=2e-3, lr_schedule="cosine"), tmp_path / "cos", progress=False)
    used = [record["lr"] for record in checkpoint.read(tmp_path / "cos")["history"]]
    assert used == pytest.approx([2e-3, 1.5e-3, 0.5e-3])
    fit("vae", MODEL, train, val, _config(2, lr=2e-3), tmp_path / "const", progress=False)
    assert [record["lr"] for record in checkpoint.read(tmp_path / "const")["history"]] == [2e-3, 2e-3]


def test_unknown_lr_schedule_is_refused_before_training(small, tmp_path):
    from avae.errors import AvaeError

    train, val = small
    with pytest.raises(AvaeError, match="lr_schedule"):
        fit("vae", MODEL, train, val, _config(1, lr_schedule="linear"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_adadelta_is_the_optimizer_it_names(small, tmp_path):
    """optimizer='adadelta' steps with torch's Adadelta (its state holds the running averages of squared
    gradients and updates), and a resume with another optimizer is refused."""
    train, val = small
    fit("vae", MODEL, train, val, _config(1, optimizer="adadelta", lr=1.0), tmp_path, progress=False)
    state = checkpoint.read(tmp_path)["optimizer"]["state"]
    assert state and all({"square_avg", "acc_delta"} <= set(s) for s in state.values())
    with pytest.raises(Exception, match="different settings"):
        fit("vae", MODEL, train, val, _config(2, lr=1.0), tmp_path, resume=True, progress=False)
    with pytest.raises(Exception, match="field 'optimizer'"):
        TrainConfig(optimizer="sgd").validate()
