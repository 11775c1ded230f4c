"""Device awareness, checked without a GPU.

On a CPU-only machine a tensor created "on the CPU by default" and one created on the input's
device are the same tensor, so running the code proves nothing about ``--device cuda``. Instead,
a :class:`~torch.overrides.TorchFunctionMode` records every tensor factory call (``torch.zeros``,
``torch.rand``, ...) made directly from avae's own source without a ``device=`` argument (or with
``device=None``), while alignment (every method), the pose regimes, the transforms, the
perturbations and every model's training loss run; the tests assert there are none. Calls that
mean to be on the CPU are listed in :data:`CPU_ON_PURPOSE`, each with its reason. Another test
runs alignment and a regime in float64, so a tensor created in the default float32 would show
in the results' dtype. Not covered: tensors made from NumPy arrays, and code not run here.
"""
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import avae
from avae.align import METHODS, align
from avae.align.amortized import train_pose_net
from avae.data.perturb import random_affine, rotated
from avae.models import VAE, VAEConfig
from avae.train import TrainConfig, fit, make_regime
from avae.transforms import POSE_FAMILIES, homogeneous, inverse_warp, pose_family, tps_unwarp, tps_warp, warp

pytestmark = pytest.mark.usefixtures("one_thread")  # many small operations: ten times faster on a busy CPU

SOURCE = Path(avae.__file__).resolve().parent

FACTORIES = {
    torch.zeros, torch.ones, torch.full, torch.empty, torch.empty_strided, torch.arange, torch.linspace,
    torch.logspace, torch.eye, torch.tensor, torch.scalar_tensor, torch.rand, torch.randn, torch.randint,
    torch.randperm,
}

# (file under src/avae, function, factory) -> why it may create its tensor on the CPU.
CPU_ON_PURPOSE = {
    ("align/__init__.py", "candidate_poses", "rand"):
        "random restarts drawn on the CPU generator seeded by `seed` (the same candidates on every device), "
        "then moved with .to(device)",
    ("align/amortized.py", "train_pose_net", "randint"):
        "batch indices drawn on the CPU generator (seeded), then moved with .to(images.device)",
    ("data/perturb.py", "rotated", "rand"):
        "angles drawn on the CPU generator (seeded), then moved with .to(x.device)",
    ("data/perturb.py", "random_affine.<locals>.uniform", "rand"):
        "affine parameters drawn on the CPU generator (seeded); the stacked parameters are moved with .to(x.device)",
    ("train/regimes.py", "_random_angles", "rand"):
        "angles drawn on the CPU generator the loop reseeds per batch, then moved with .to(x.device)",
    ("train/regimes.py", "TransformOptimized.loss", "randint"):
        "the search's seed, drawn on the CPU generator and read as a Python int (never a device tensor)",
    ("train/loop.py", "fit", "randperm"):
        "the epoch's order on the CPU generator (seeded); each batch indexes the images with index.to(device)",
    ("attacks.py", "pgd_linf", "rand"):
        "the random start drawn on the CPU generator (seeded), then moved with .to(x.device)",
    ("train/loop.py", "per_image_loss", "empty"):
        "validation losses are collected on the CPU (each batch's terms are moved with .cpu())",
}


class FactoryRecorder(TorchFunctionMode):
    """Records (file, function, factory, line) of factory calls from avae's source with no device, and
    those that pass both a generator and a device: avae's generators live on the CPU, and PyTorch refuses
    a CPU generator for a CUDA tensor, so such a call works here and fails on a GPU."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str, str, int]] = []
        self.generator_with_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        no_device = kwargs.get("device") is None
        if func in FACTORIES and (no_device or kwargs.get("generator") is not None):
            frame = sys._getframe(1)  # the Python code that called the factory (C++ functions have no frame)
            path = Path(frame.f_code.co_filename).resolve()
            if path.is_relative_to(SOURCE):
                where = (path.relative_to(SOURCE).as_posix(), frame.f_code.co_qualname, func.__name__, frame.f_lineno)
                if no_device:
                    self.calls.append(where)
                else:
                    self.generator_with_device.append(f"src/avae/{where[0]}:{where[3]} {where[1]}: torch.{where[2]}"
                                                      "(..., generator=, device=)")
        return func(*args, **kwargs)

    def unexplained(self) -> list[str]:
        return sorted({f"src/avae/{file}:{line} {function}: torch.{factory}(...) without device="
                       for file, function, factory, line in self.calls
                       if (file, function, factory) not in CPU_ON_PURPOSE} | set(self.generator_with_device))


def small_vae(dtype=torch.float32) -> VAE:
    """An untrained VAE with MLP nets: the device checks need the code paths, not a good model."""
    torch.manual_seed(0)
    return VAE(VAEConfig(latent=4, net="mlp")).to(dtype).eval()


@pytest.fixture(scope="module")
def vae():
    return small_vae()


@pytest.fixture(scope="module")
def digits(embedded_digits):
    return rotated(embedded_digits[:8], seed=3)[0]


def test_the_recorder_catches_a_factory_without_device():
    """The check itself: it sees a default-device factory called from avae's source, not one with device=."""
    family = pose_family("rotation")
    with FactoryRecorder() as recorder:
        family.identity(2)  # device=None: lands on the CPU whatever the caller's tensors are
        family.identity(2, device="cpu")
        torch.zeros(2)  # called from the test, not from avae
    assert [call[:3] for call in recorder.calls] == [("transforms/poses.py", "PoseFamily.identity", "zeros")]
    assert len(recorder.unexplained()) == 1


def test_attacks_draw_their_random_start_on_the_cpu_generator_and_move_it(embedded_digits):
    """PGD's random start: a CPU generator with device=x.device works on the CPU and fails on a GPU; the
    recorder flags that pattern, and the start is drawn on the generator, then moved."""
    from avae.attacks import pgd_linf

    x = embedded_digits[:4]

    def attack(seed):
        return pgd_linf(lambda a: (a - x).pow(2).sum((1, 2, 3)), x, 0.1, 1, 0.05,
                        generator=torch.Generator().manual_seed(seed))

    with FactoryRecorder() as recorder:
        first = attack(0)
    assert recorder.unexplained() == []
    assert torch.equal(first, attack(0)) and not torch.equal(first, attack(1))
    assert (first - x).abs().max() <= 0.1 + 1e-6 and first.dtype == x.dtype


def test_alignment_creates_every_tensor_on_the_device_of_its_input(vae, digits, embedded_digits):
    with FactoryRecorder() as recorder:
        # the pose network (amortized and stn) is trained for two steps: that covers train_pose_net,
        # its perturbations and its canonical search too
        net, _ = train_pose_net(vae, embedded_digits[:8], "rotation", iterations=2, batch_size=4, progress=False,
                                search={"method": "coarse-to-fine", "levels": (4, 2), "steps": 1})
        runs = {
            "search": align(vae, digits, "rotation", restarts=3, steps=1, polish=1, patience=1,
                            init=torch.zeros(8, 1)),
            "coarse-to-fine": align(vae, digits, "rotation", method="coarse-to-fine", levels=(4, 2), steps=1),
            "amortized": align(vae, digits, "rotation", method="amortized", pose_net=net, top_k=2, steps=1),
            "stn": align(vae, digits, "rotation", method="stn", pose_net=net, steps=0),
            "affine": align(vae, digits, "affine-translation", restarts=3, steps=1, polish=1),
        }
    assert recorder.unexplained() == []
    assert set(METHODS) <= set(runs)
    for name, result in runs.items():
        assert result.loss.shape == (8,) and torch.isfinite(result.loss).all(), name


def test_transforms_and_perturbations_follow_their_input(embedded_digits):
    x = embedded_digits[:4]
    with FactoryRecorder() as recorder:
        for name, family in POSE_FAMILIES.items():
            params = family.identity(4, device=x.device) + 0.1
            warp(inverse_warp(x, params, name), params, name)
            homogeneous(family.matrix(params))
            family.compose(params, params)
        tps_unwarp(tps_warp(x, torch.full((4, 18), 0.05)), torch.full((4, 18), 0.05))
        rotated(x, seed=1)
        rotated(x, 30.0)
        random_affine(x, seed=1, max_translation=0.1)
    assert recorder.unexplained() == []


def test_one_epoch_of_each_pose_regime_creates_every_tensor_on_the_training_device(tiny_split, tmp_path):
    train, val = tiny_split
    train, val = train.subset(slice(0, 16)), val.subset(slice(0, 8))
    configs = {
        "random-rotation": TrainConfig(epochs=1, batch_size=8, regime="random-rotation"),
        # two epochs, so that the second one starts every image's search from its pose of the first
        "transform-optimized": TrainConfig(epochs=2, batch_size=8, regime="transform-optimized", pose_restarts=2,
                                           pose_steps=1, pose_polish=1, pose_warm_start=True),
    }
    with FactoryRecorder() as recorder:
        for name, config in configs.items():
            fit("vae", {"latent": 4, "net": "mlp"}, train, val, config, tmp_path / name, progress=False, device="cpu")
    assert recorder.unexplained() == []


@pytest.mark.parametrize("name,config,shape", [
    ("vae", {"latent": 4}, (1, 40)),
    ("autoencoding-vae", {"latent": 4, "avae": True, "smooth": True}, (3, 28)),
    ("tvae", {"latent": 4, "transformer": "tps", "prior": "diagonal"}, (1, 28)),
    ("tvae", {"latent": 4, "transformer": "affine5", "prior": "full"}, (1, 28)),
    ("dtvae", {"latent": 4}, (1, 28)),
])
def test_every_model_trains_on_the_device_of_its_batch(name, config, shape):
    """What the plain regime runs: a sampled training loss and its backward pass, then an evaluation loss."""
    from avae.train.checkpoint import build

    model = build(name, config, "model")
    x = torch.rand(4, shape[0], shape[1], shape[1], generator=torch.Generator().manual_seed(0))
    with FactoryRecorder() as recorder:
        model.train()
        model.loss(x, sample=True)["loss"].mean().backward()
        model.eval()
        model.loss(x, sample=False)
    assert recorder.unexplained() == []


def test_alignment_and_the_regimes_keep_the_dtype_of_their_input(digits):
    """Tensors made in the default float32 would turn up here: every result stays float64."""
    model = small_vae(torch.float64)
    x = digits.double()
    result = align(model, x, "rotation", restarts=3, steps=1, polish=1, init=torch.zeros(8, 1))
    for field in ("loss", "pose", "aligned", "reconstruction", "identity_loss"):
        assert getattr(result, field).dtype == torch.float64, field
    regime = make_regime(TrainConfig(regime="transform-optimized", pose_restarts=2, pose_steps=1,
                                     pose_warm_start=True), n_images=8)
    index = torch.arange(8)
    for epoch in (0, 1):
        loss = regime.loss(model, x, index, epoch, torch.Generator().manual_seed(epoch))
        assert loss.dtype == torch.float64
    assert regime.angles[1].device.type == "cpu" and torch.isfinite(regime.angles[1]).all()
    assert make_regime(TrainConfig(regime="random-rotation")).loss(model, x, index, 0, torch.Generator()).dtype == torch.float64
    assert rotated(x, seed=0)[1].params.dtype == torch.float64


def test_align_refuses_images_on_another_device_than_the_model(vae, digits):
    from avae.errors import AvaeError

    with pytest.raises(AvaeError, match="the model is on cpu but the images are on meta"):
        align(vae, torch.empty(2, 1, 40, 40, device="meta"), "rotation")


def test_device_cuda_without_a_gpu_is_one_clear_line(tiny_split, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from avae.errors import AvaeError

    train, val = tiny_split
    for regime in ("random-rotation", "transform-optimized"):
        with pytest.raises(AvaeError, match=r"^--device cuda: no CUDA GPU is available") as caught:
            fit("vae", {"latent": 4, "net": "mlp"}, train.subset(slice(0, 8)), val.subset(slice(0, 8)),
                TrainConfig(epochs=1, regime=regime), tmp_path / regime, progress=False, device="cuda")
        assert "\n" not in str(caught.value)
