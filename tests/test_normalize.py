"""A model trained on mean/std-normalised pixels (the paper's preprocessing) is evaluated the same way."""
import json

from avae.cli import main


def test_normalised_training_and_evaluation_follow_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--latent", "2", "--epochs", "1", "--batch-size", "128", "--normalize", "--quiet",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["output"] == "linear"  # normalised pixels are not in [0, 1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["normalization"] == [0.1307, 0.3081]
    capsys.readouterr()
    # no --normalize here: the checkpoint says how its pixels were prepared
    assert main(["evaluate", "--checkpoint", str(run), "--data", "mnist-embedded", "--split", "val",
                 "--images", "64", "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["data"]["normalization"] == [0.1307, 0.3081]
