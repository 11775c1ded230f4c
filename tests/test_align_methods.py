"""The alignment methods beyond the paper's search: coarse-to-fine, amortized, stn, warm starts,
early stopping; and the pose decomposition that pose-network targets rely on."""
import pytest
import torch

from avae.align import _Best, align, refine
from avae.data import ASYMMETRIC_DIGITS, load, rotated
from avae.errors import AvaeError
from avae.models.affine_vae import AffineVAE
from avae.nets.pose import PoseNet, PoseNetConfig
from avae.train import checkpoint
from avae.transforms import POSE_FAMILIES, angle_gap_degrees, pose_family


@pytest.fixture(scope="module")
def vae():
    return checkpoint.load(checkpoint.pretrained("vae-L8"))


@pytest.fixture(scope="module")
def turned():
    x = load("mnist-embedded", "val", seed=0).images[:24]
    return rotated(x, seed=5)[0]


@pytest.mark.parametrize("name", sorted(POSE_FAMILIES))
def test_params_from_matrix_inverts_matrix(name):
    family = pose_family(name)
    params = torch.randn(50, family.n_params, generator=torch.Generator().manual_seed(0)) * 0.5
    params[:, 0] = params[:, 0].clamp(-3.0, 3.0)
    assert torch.allclose(family.params_from_matrix(family.matrix(params)), params, atol=1e-5)


def test_compose_is_the_matrix_product():
    family = pose_family("affine")
    a, b = torch.randn(10, 4) * 0.4, torch.randn(10, 4) * 0.4

    def h(m):
        return torch.cat([m, torch.tensor([0.0, 0.0, 1.0]).expand(10, 1, 3)], 1)

    assert torch.allclose(h(family.matrix(family.compose(a, b))), h(family.matrix(b)) @ h(family.matrix(a)), atol=1e-5)
    r = pose_family("rotation")
    assert torch.allclose(r.compose(torch.tensor([[0.3]]), torch.tensor([[0.5]])), torch.tensor([[0.8]]), atol=1e-6)


@pytest.mark.parametrize("options", [
    {"method": "coarse-to-fine", "steps": 0},
    {"method": "coarse-to-fine", "steps": 3, "patience": 1},
    {"method": "search", "restarts": 4, "steps": 3, "patience": 1},
    {"method": "search", "restarts": 4, "steps": 0, "polish": 2},
])
def test_methods_never_return_a_loss_above_the_identity_pose(vae, turned, options):
    result = align(vae, turned, "rotation", **options)
    assert (result.loss <= result.identity_loss + 1e-4).all()
    # and each finds the turn back: the mean loss of uniformly rotated digits falls by at least a fifth
    # (0.54 to 0.69 of the identity's here; an identity-returning search keeps 1.0)
    assert result.loss.mean() < 0.8 * result.identity_loss.mean()
    recomputed = AffineVAE(vae, "rotation").loss(turned, result.pose)["loss"]
    assert torch.allclose(recomputed, result.loss, rtol=1e-4, atol=1e-2)
    assert torch.allclose(AffineVAE(vae, "rotation").loss(turned, result.pose)["reconstruction"],
                          result.reconstruction, atol=1e-4)  # cached outputs belong to the pose


def test_coarse_to_fine_gets_close_to_the_paper_search(vae, turned):
    paper = align(vae, turned, "rotation")
    fast = align(vae, turned, "rotation", method="coarse-to-fine", steps=0)
    gain_paper = (paper.identity_loss - paper.loss).mean()
    gain_fast = (fast.identity_loss - fast.loss).mean()
    assert gain_fast >= 0.9 * gain_paper


def test_amortized_with_any_pose_net_is_no_worse_than_identity_and_stn_can_be(vae, turned):
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(pose="rotation"))
    amortized = align(vae, turned, "rotation", method="amortized", pose_net=net, steps=2)
    assert (amortized.loss <= amortized.identity_loss + 1e-4).all()
    assert not torch.allclose(amortized.pose, torch.zeros_like(amortized.pose))  # it moved off the identity
    stn = align(vae, turned, "rotation", method="stn", pose_net=net)
    assert torch.isnan(stn.identity_loss).all() and torch.isfinite(stn.loss).all()
    assert torch.allclose(stn.pose, net.predict(turned, 1)[:, 0], atol=1e-6)


def test_amortized_needs_a_matching_pose_net(vae, turned):
    with pytest.raises(AvaeError, match="needs a trained pose network"):
        align(vae, turned, "rotation", method="amortized")
    with pytest.raises(AvaeError, match="predicts 'affine' poses"):
        align(vae, turned, "rotation", method="amortized", pose_net=PoseNet(PoseNetConfig(pose="affine")))
    with pytest.raises(AvaeError, match="coarse-to-fine"):
        align(vae, turned, "affine", method="coarse-to-fine")


def test_warm_start_candidates_are_used(vae):
    x = load("mnist-embedded", "val", seed=0).images[:8]
    turned, truth = rotated(x, 90, resampling="paper")  # exact, so the true inverse is a perfect candidate
    result = align(vae, turned, "rotation", restarts=1, steps=0, init=truth.inverse_params())
    upright = vae.loss(x, sample=False)["loss"]
    assert torch.allclose(result.loss, torch.minimum(upright, result.identity_loss), rtol=1e-4, atol=1e-2)


def test_refine_follows_torch_adam_exactly(vae, turned):
    """The hand-written per-image Adam (needed for early stopping) matches torch.optim.Adam."""
    avae = AffineVAE(vae, "rotation")
    start = torch.linspace(-1, 1, turned.shape[0]).unsqueeze(1)
    best = _Best(turned, 1)
    best.pose, best.loss = start.clone(), torch.full((turned.shape[0],), float("inf"))
    refine(avae, turned, best, steps=4, lr=0.05)
    params = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=0.05)
    seen = []
    for _ in range(4):
        loss = avae.loss(turned, params)["loss"]
        seen.append(loss.detach())
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    seen.append(avae.loss(turned, params)["loss"].detach())
    assert torch.allclose(best.loss, torch.stack(seen).min(0).values, rtol=1e-4, atol=1e-3)


def test_polish_moves_each_image_downhill_from_where_it_starts(vae, turned):
    """Polish only ever replaces an image's pose by a better-scoring neighbour, and on rotated
    digits a grid's best angle (45 degree spacing) has better neighbours for most images."""
    start = align(vae, turned, "rotation", restarts=8, grid=True, steps=0)
    polished = align(vae, turned, "rotation", restarts=8, grid=True, steps=0, polish=3)
    assert (polished.loss <= start.loss + 1e-5).all()
    assert (polished.loss < start.loss - 1e-3).float().mean() > 0.5
    moved = torch.rad2deg((polished.pose - start.pose).abs()[:, 0])
    assert (moved <= 4 + 2 + 1 + 1e-3).all()  # at most one step per round: 4, 2, 1 degrees




@pytest.fixture(scope="module")
def turned_test_digits(mnist_test_dir):
    data = load("mnist", "test", data_dir=mnist_test_dir, limit=300, seed=0)
    keep = torch.isin(data.labels, torch.tensor(ASYMMETRIC_DIGITS))
    return rotated(data.images[keep][:80], seed=1)[0]


@pytest.fixture(scope="module")
def upright_vae_search(turned_test_digits):
    """The upright VAE, its pose network, and the paper search's angles for the turned test digits."""
    path = checkpoint.pretrained("vae-L8")
    model = checkpoint.load(path)
    net = checkpoint.load(path / "pose-net-rotation.pt", expect="pose-net")
    return model, net, align(model, turned_test_digits, "rotation", restarts=30, steps=20).pose[:, 0]


def test_shipped_pose_net_predicts_the_rotation_the_full_search_finds(mnist_test_dir):
    """Issue 5: the upright VAE's pose network alone (no scoring by the model) puts its angle within
    15 degrees of the paper search's for at least 90 % of rotated asymmetric test digits, when pooled
    over the image's four quarter turns; its single view falls just short.

    The digits are the benchmark's 1,000 (the full-MNIST models under fair rotations: 90.6 % pooled, 89.9 %
    single view; the previous models' benchmark, benchmarks/results/pose_net_agreement.md: 90.5 % and
    89.0 %, with the paper search agreeing with itself on 89.9 %), because on 80 digits the share moves by
    +-7 points from one sample to the next. About a minute."""
    data = load("mnist", "test", data_dir=mnist_test_dir, seed=0)
    keep = torch.isin(data.labels, torch.tensor(ASYMMETRIC_DIGITS))
    # the benchmark's protocol: fair rotations, as the shipped pose network was trained on
    x = rotated(data.images[keep][:1000], seed=1)[0]
    path = checkpoint.pretrained("vae-L8")
    model = checkpoint.load(path)
    net = checkpoint.load(path / "pose-net-rotation.pt", expect="pose-net")
    search = align(model, x, "rotation", restarts=30, steps=20).pose[:, 0]
    with torch.no_grad():
        alone = (angle_gap_degrees(net.predict(x, 1)[:, 0, 0], search) <= 15).float().mean()
        pooled = (angle_gap_degrees(net.predict(x, 1, turns=4)[:, 0, 0], search) <= 15).float().mean()
    print(f"single view {alone:.3f}, pooled over quarter turns {pooled:.3f}")
    assert pooled >= 0.90
    assert alone >= 0.87


def test_pose_net_pooled_over_quarter_turns_is_exactly_equivariant():
    """Pooled over the four quarter turns, the network sees the same four views of an image and of
    that image turned by 90 degrees, so its angle must move by exactly 90 degrees, whatever its
    weights (a view shifted the wrong way breaks this); one view alone has no such guarantee."""
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(pose="rotation")).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = load("mnist-embedded", "val", seed=0).images[:16]
    with torch.no_grad():
        pooled = net.predict(x, 2, turns=4)
        pooled_turned = net.predict(torch.rot90(x, 1, dims=(-2, -1)), 2, turns=4)
        alone = net.predict(x, 1)[:, 0, 0]
        alone_turned = net.predict(torch.rot90(x, 1, dims=(-2, -1)), 1)[:, 0, 0]
    assert angle_gap_degrees(pooled_turned[..., 0] + torch.pi / 2, pooled[..., 0]).max() < 1e-3
    assert angle_gap_degrees(alone_turned + torch.pi / 2, alone).max() > 1.0


def test_soft_sector_targets_spread_credit_to_neighbours_and_narrow_to_the_hard_target():
    """label_sigma: a logit mass on the sector beside the target costs less than with one-hot
    targets; a tiny sigma gives the hard cross-entropy back; a negative one is refused."""
    torch.manual_seed(0)
    x = torch.rand(4, 1, 40, 40)
    target = torch.full((4, 1), 2 * torch.pi / 36 * 5.9)  # near the border of sectors 5 and 6
    hard, soft, tiny = (PoseNet(PoseNetConfig(label_sigma=s)) for s in (0.0, 10.0, 0.5))
    for net in (soft, tiny):
        net.load_state_dict(hard.state_dict())
    with torch.no_grad():
        hard.angle_logits.bias.zero_()[6] = 8.0  # confident in the neighbour of the target's sector
        for net in (soft, tiny):
            net.angle_logits.bias.copy_(hard.angle_logits.bias)
        assert (soft.loss(x, target) < hard.loss(x, target) - 1.0).all()
        target[:] = 2 * torch.pi / 36 * 5.5  # a sector centre: the tiny spread is one sector
        assert torch.allclose(tiny.loss(x, target), hard.loss(x, target), atol=1e-4)
    with pytest.raises(AvaeError, match="label_sigma"):
        PoseNetConfig(label_sigma=-1.0).validate()


def test_pose_net_turns_are_refused_where_a_quarter_turn_is_not_a_shift_of_the_angle(vae, turned):
    with pytest.raises(AvaeError, match="turns must be 1, 2 or 4"):
        PoseNet().predict(turned, 1, turns=3)
    with pytest.raises(AvaeError, match="needs pose 'rotation'"):
        align(vae, turned, "affine", method="stn", pose_net=PoseNet(PoseNetConfig(pose="affine")), turns=4)


def test_amortized_alignment_lands_where_the_full_search_does(upright_vae_search, turned_test_digits):
    """The network's top 3 guesses and the identity, scored by the model in one pass (no gradient
    steps): within 15 degrees of the paper search's angle for at least 90 % of the digits (91.2 %
    here, 94.0 % on the benchmark's 1,000)."""
    model, net, search = upright_vae_search
    found = align(model, turned_test_digits, "rotation", method="amortized", pose_net=net, top_k=3, steps=0)
    assert (angle_gap_degrees(found.pose[:, 0], search) <= 15).float().mean() >= 0.90


@pytest.mark.parametrize("name,pose,top_k,polish", [("vae-L8", "rotation", 2, 2), ("vae-L8", "affine", 2, 2),
                                                    ("vae-L8-trans-opt", "rotation", 2, 2),
                                                    ("vae-L8-trans-opt", "affine", 4, 0)])
def test_shipped_amortized_alignment_is_close_to_the_paper_search(name, pose, top_k, polish, turned_test_digits):
    """The fast method of the benchmark keeps most of the paper's gain on real rotated test digits."""
    from avae.data import random_affine

    path = checkpoint.pretrained(name)
    model = checkpoint.load(path)
    net = checkpoint.load(path / f"pose-net-{pose}.pt", expect="pose-net")
    x = turned_test_digits if pose == "rotation" else random_affine(turned_test_digits, seed=2)[0]
    paper = align(model, x, pose)
    fast = align(model, x, pose, method="amortized", pose_net=net, top_k=top_k, steps=0, polish=polish)
    assert (fast.loss <= fast.identity_loss + 1e-4).all()
    gain = (fast.identity_loss - fast.loss).mean() / (paper.identity_loss - paper.loss).mean()
    assert gain >= 0.9
