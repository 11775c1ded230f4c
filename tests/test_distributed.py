"""Data-parallel training on CPU with gloo: two ranks end with identical weights, 2 ranks x batch B
match 1 process x batch 2B, the pose cache is complete on every rank, and a run stopped by a signal
inside an epoch resumes to the same weights. One spawn of two processes serves every test."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from avae.train import checkpoint
from avae.train import regimes
from avae.train.loop import TrainConfig, TrainingInterrupted, fit

MLP = {"latent": 4, "net": "mlp"}  # no batch norm, so data parallelism is exact
CONV = {"latent": 4}  # the paper's net, with batch norm
B = 16  # per-rank batch


class Deterministic(regimes.Plain):
    """Plain, with the posterior mean instead of a sample: each rank's noise would differ from a
    single process's, so only a noise-free loss can show that 2 x B equals 2B."""

    name = "deterministic"

    def loss(self, model, x, index, epoch, generator):
        return model.loss(x, sample=False)["loss"]


class SignalAt(Deterministic):
    """Deterministic, but sends SIGTERM to its own process at one batch (rank 1 only)."""

    at = (1, 2)  # (epoch, batch number within the rank's epoch), 0-based

    def __init__(self):
        self.calls = {}

    def loss(self, model, x, index, epoch, generator):
        batch = self.calls[epoch] = self.calls.get(epoch, -1) + 1
        if (epoch, batch) == self.at and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss(model, x, index, epoch, generator)


def _register():
    regimes.REGIMES.setdefault("deterministic", Deterministic)
    regimes.REGIMES.setdefault("signal-at", SignalAt)


def _config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": B, "lr": 3e-3, **kw})


def _worker(rank, port, root, train, val):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    _register()
    import avae.train.loop as loop

    made = []
    loop.make_regime = lambda *a, **k: made.append(regimes.make_regime(*a, **k)) or made[-1]
    results = {}
    conv = fit("vae", CONV, train, val, _config(epochs=1), f"{root}/conv", progress=False)
    results["conv"] = conv.state_dict()
    # weights that barely move (lr 1e-12), so the batch-norm running statistics are a known function of the data
    still = fit("vae", CONV, train, val, _config(epochs=1, lr=1e-12, regime="deterministic"), f"{root}/still",
                progress=False)
    results["still"] = still.state_dict()
    mlp = fit("vae", MLP, train, val, _config(regime="deterministic"), f"{root}/mlp", progress=False)
    results["mlp"] = mlp.state_dict()
    fit("vae", MLP, train, val, _config(regime="transform-optimized", pose_restarts=2, pose_steps=1,
                                        pose_warm_start=True), f"{root}/transopt", progress=False)
    results["angles"] = made[-1].state_dict()["angles"]
    try:
        fit("vae", MLP, train, val, _config(regime="signal-at"), f"{root}/stopped", progress=False)
        results["stopped"] = None
    except TrainingInterrupted as err:
        results["stopped"] = err.exit_code
    resumed = fit("vae", MLP, train, val, _config(regime="signal-at"), f"{root}/stopped", resume=True, progress=False)
    results["resumed"] = resumed.state_dict()
    torch.save(results, f"{root}/rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small(tiny_split):
    """96 training digits (3 global batches of 2 x 16), 20 validation digits (10 per rank)."""
    train, val = tiny_split
    return train.subset(slice(0, 96)), val.subset(slice(0, 20))


@pytest.fixture(scope="module")
def ranks(small, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(root), *small), nprocs=2, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_both_ranks_end_with_identical_weights(ranks):
    root, (r0, r1) = ranks
    for run in ("conv", "mlp", "resumed"):
        assert _equal(r0[run], r1[run]), run
    # batch-norm running statistics included, and they are what rank 0 saved
    assert any("running_mean" in k for k in r0["conv"])
    assert _equal(checkpoint.read(root / "conv")["state_dict"], r0["conv"])
    history = checkpoint.read(root / "conv")["history"]
    assert history[0]["val_loss"]["n"] == 20 and np.isfinite(history[0]["train_loss"])


def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(ranks, small, tmp_path):
    """Same data, same seed, no batch norm, deterministic loss: the only difference is the order
    of float32 sums (mean of two means of 16 vs one mean of 32). After 6 Adam steps at lr 3e-3,
    all but a few of the ~950,000 weights agree to 1e-5; Adam divides by the root of the squared
    gradient, so where a gradient is close to zero it turns rounding noise into a step of up to
    lr: those few weights (measured: 4) differ by up to 3.1e-5, so the bound is 1e-4 (3 % of one step)."""
    root, (r0, _) = ranks
    _register()
    single = fit("vae", MLP, *small, _config(regime="deterministic", batch_size=2 * B), tmp_path / "one", progress=False)
    torch.manual_seed(0)  # fit's initial weights
    start = checkpoint.build("vae", MLP, "model").state_dict()
    moved = max((single.state_dict()[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3, "training should have moved the weights well beyond the tolerance"
    off, total = 0, 0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(r0["mlp"][key], value, rtol=0, atol=1e-4, msg=key)
        off += int(((r0["mlp"][key] - value).abs() > 1e-5).sum())
        total += value.numel()
    assert off <= 1e-4 * total, f"{off} of {total} weights differ by more than 1e-5"
    two, one = checkpoint.read(root / "mlp")["history"], checkpoint.read(tmp_path / "one")["history"]
    for a, b in zip(two, one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"]["mean"] == pytest.approx(b["val_loss"]["mean"], rel=1e-5)


def test_batch_norm_running_means_average_both_ranks_batches(ranks, small, tmp_path):
    """Each rank's batch norm sees only its half of the global batch; averaging the running means over
    ranks after every step gives the running means of one process that sees both halves (batch 2B),
    weights held still, for the first batch norm (whose input no batch statistic has touched yet; the
    later layers' inputs are normalised with each rank's own batch statistics, no SyncBatchNorm). A
    broadcast of rank 0's statistics would keep its half's alone."""
    _, (r0, r1) = ranks
    _register()
    single = fit("vae", CONV, *small, _config(epochs=1, lr=1e-12, regime="deterministic", batch_size=2 * B),
                 tmp_path / "one", progress=False).state_dict()
    first = next(k for k in single if k.startswith("encoder") and k.endswith("running_mean"))
    torch.testing.assert_close(r0["still"][first], single[first], rtol=0, atol=1e-6)
    assert all(torch.equal(r0["still"][k], r1["still"][k]) for k in single if "running" in k)
    # what either rank saw alone: its own half of each global batch
    order = torch.randperm(96, generator=torch.Generator().manual_seed(0 * 1_000_003 + 0))
    for rank in (0, 1):
        mine = order[rank::2]  # DistributedSampler's stride, as avae.train.distributed.shard
        alone = fit("vae", CONV, small[0].subset(mine.sort().values), small[1],
                    _config(epochs=1, lr=1e-12, regime="deterministic", batch_size=B), tmp_path / f"rank{rank}",
                    progress=False).state_dict()
        assert (alone[first] - single[first]).abs().max() > 1e-4  # 100 times the tolerance above


def test_pose_cache_is_complete_and_identical_on_every_rank(ranks, small):
    root, (r0, r1) = ranks
    assert r0["angles"].keys() == r1["angles"].keys() == {"0", "1"}
    for epoch in ("0", "1"):
        assert torch.isfinite(r0["angles"][epoch]).all(), "every image's pose, from both ranks"
        assert torch.equal(r0["angles"][epoch], r1["angles"][epoch])
    saved = checkpoint.read(root / "transopt")["regime_state"]["angles"]
    assert torch.equal(saved["1"], r0["angles"]["1"])


def test_signal_on_one_rank_stops_both_and_resume_is_exact(ranks):
    """SIGTERM on rank 1 inside epoch 2: both ranks stop at the same batch, rank 0 saves where they
    stopped, and the resumed run ends with exactly the weights of the uninterrupted one."""
    root, (r0, r1) = ranks
    assert r0["stopped"] == r1["stopped"] == 128 + signal.SIGTERM
    assert _equal(r0["resumed"], r0["mlp"])
    history = checkpoint.read(root / "stopped")["history"]
    reference = checkpoint.read(root / "mlp")["history"]
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in reference]


@pytest.mark.slow  # three more Python processes; the spawned ranks above test the same loop
def test_torchrun_cli(small, tmp_path):
    """The documented command: torchrun --nproc_per_node=2 -m avae train ..."""
    train, _ = small
    data = tmp_path / "digits.npy"
    np.save(data, (train.images[:, 0, 6:34, 6:34] * 255).round().to(torch.uint8).numpy())
    cmd = ["torchrun", "--nproc_per_node=2", "--master_port", str(_free_port()), "-m", "avae", "train",
           "--net", "mlp", "--latent", "4", "--epochs", "1", "--batch-size", "16", "--data", str(data),
           "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    if subprocess.run(["which", "torchrun"], capture_output=True).returncode:
        cmd[:1] = [sys.executable, "-m", "torch.distributed.run"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained vae") == 1, done.stdout
    payload = checkpoint.read(tmp_path / "run")
    assert payload["epoch"] == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["device"] == "cpu"


def test_device_choice(small, tmp_path):
    from avae.errors import AvaeError
    from avae.train.distributed import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(AvaeError, match="no CUDA GPU"):
            resolve_device("cuda")
    if not torch.cuda.is_available():  # every regime may ask for the GPU; without one, the one-line error
        with pytest.raises(AvaeError, match="no CUDA GPU"):
            fit("vae", MLP, *small, _config(regime="random-rotation"), tmp_path / "run", device="cuda", progress=False)
