"""Transformation-optimized training (Bidart & Wong 2019, section 3.3) and its pose records."""
import numpy as np
import pytest
import torch

from avae.train import TrainConfig, checkpoint, fit, make_regime


@pytest.fixture(scope="module")
def vae():
    return checkpoint.load(checkpoint.pretrained("vae-L8"))


def test_optimized_poses_lower_the_batch_loss_against_the_identity_pose(vae, embedded_digits):
    """Both regimes draw the same random rotations from the same generator state; the optimised
    poses must give a clearly lower loss than training at the identity pose would."""
    x = embedded_digits[:48]
    index = torch.arange(48)
    torch.manual_seed(0)
    at_identity = make_regime(TrainConfig(regime="random-rotation")).loss(vae, x, index, 0, torch.Generator().manual_seed(7))
    regime = make_regime(TrainConfig(regime="transform-optimized", pose_restarts=8, pose_steps=3), n_images=48)
    torch.manual_seed(0)
    optimized = regime.loss(vae, x, index, 0, torch.Generator().manual_seed(7))
    assert optimized.shape == (48,)
    assert optimized.mean() < 0.85 * at_identity.mean()
    assert optimized.requires_grad  # the weight step can use it
    angles = regime.angles[0]
    assert torch.isfinite(angles).all() and angles.min() >= 0 and angles.max() < 360


def test_pose_search_builds_no_graph_into_the_weights(vae, embedded_digits):
    regime = make_regime(TrainConfig(regime="transform-optimized", pose_restarts=3, pose_steps=2), n_images=8)
    vae.zero_grad(set_to_none=True)
    loss = regime.loss(vae, embedded_digits[:8], torch.arange(8), 0, torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in vae.parameters())  # the search left no gradients behind
    loss.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())
    vae.zero_grad(set_to_none=True)


def test_transform_optimized_training_records_one_angle_per_image_per_epoch(tiny_split, tmp_path):
    train, val = tiny_split
    train, val = train.subset(slice(0, 64)), val.subset(slice(0, 16))
    config = TrainConfig(epochs=2, batch_size=32, regime="transform-optimized", pose_restarts=3, pose_steps=1)
    fit("vae", {"latent": 4}, train, val, config, tmp_path / "run", progress=False)
    saved = np.load(tmp_path / "run" / "pose_angles.npz")
    assert saved["angles"].shape == (2, 64)
    assert np.isfinite(saved["angles"]).all() and (saved["angles"] >= 0).all() and (saved["angles"] < 360).all()
    assert list(saved["epochs"]) == [1, 2]
    assert np.array_equal(saved["labels"], train.labels.numpy())
    # the records travel with the checkpoint, so a resumed run keeps them
    state = checkpoint.read(tmp_path / "run")["regime_state"]["angles"]
    assert sorted(state) == ["0", "1"]


@pytest.mark.parametrize("field,value", [("pose_restarts", 0), ("pose_steps", -1), ("pose_polish", -1)])
def test_pose_search_settings_are_validated(field, value):
    from avae.config import config_from_dict
    from avae.errors import AvaeError
    from avae.train import TrainConfig

    least = 1 if field == "pose_restarts" else 0
    with pytest.raises(AvaeError, match=f"^options: field '{field}' must be >= {least}, got {value}$"):
        config_from_dict(TrainConfig, {"regime": "transform-optimized", field: value}, "options")


def test_warm_start_carries_each_images_canonical_pose_into_the_next_epoch(vae, embedded_digits):
    """Epoch 1 turns each digit by a fresh angle s; with warm start its candidate is last epoch's canonical
    angle c moved by this epoch's turn, c - s. Plant c = 0 (upright digits, the upright VAE's own pose) and
    let the search try nothing else but the identity: the recorded canonical angle must come back to 0.
    With the sign of the shift wrong (c + s) it would land on 2s, and without warm start on s."""
    from avae.data import ASYMMETRIC_DIGITS, load

    digits = load("mnist-embedded", "val", seed=0)
    keep = torch.isin(digits.labels, torch.tensor(ASYMMETRIC_DIGITS))
    x = digits.images[keep][:32]
    index = torch.arange(32)

    def epoch_one(warm_start):
        regime = make_regime(TrainConfig(regime="transform-optimized", pose_restarts=1, pose_steps=0,
                                         pose_warm_start=warm_start), n_images=32)
        regime.angles[0] = torch.zeros(32)  # epoch 0's record: every digit canonical at 0 degrees
        generator = torch.Generator().manual_seed(11)
        regime.loss(vae, x, index, 1, generator)
        return regime.angles[1]

    def off_zero(angles):
        return torch.minimum(angles % 360, 360 - angles % 360)

    warm = epoch_one(True)
    assert (off_zero(warm) < 1.0).float().mean() >= 0.9  # back at the planted pose
    cold = epoch_one(False)
    assert (off_zero(cold) > 20).float().mean() >= 0.8  # the identity alone keeps the fresh turn
