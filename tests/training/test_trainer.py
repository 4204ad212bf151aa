"""The training loop: reproducibility, resume equivalence, run directory, divergence."""

import json

import pytest
import torch

from training.checkpoint import list_checkpoints, load_checkpoint, load_run
from training.errors import CheckpointError, TrainingDiverged, UserError
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(run_dir):
    return load_checkpoint(list_checkpoints(run_dir)[-1])


def _train_steps(run_dir):
    records = map(json.loads, open(run_dir / "metrics.jsonl"))
    return [r["step"] for r in records if "loss_D" in r]


def _assert_same_weights(a, b):
    for key in ("G", "G_ema", "D"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"


@pytest.mark.parametrize(
    "model, dataset, batch, steps, stop",
    [
        # Each run crosses an epoch boundary after the split, so the resumed data order must
        # continue into a fresh permutation. digits is indexed in memory; fake (256 images, 8
        # batches of 32) goes through the DataLoader path.
        ("dcgan", "fake", 32, 10, 5),
        ("cgan", "digits", 128, 13, 6),
        ("stylegan", "fake", 32, 10, 5),
    ],
)
def test_resume_is_bit_identical_to_uninterrupted(
    tmp_path, tiny, model, dataset, batch, steps, stop
):
    opts = {**tiny, "model": model, "dataset": dataset, "batch_size": batch}
    opts["kimg"] = steps * batch / 1000
    if model == "stylegan":
        opts["r1_every"] = 4  # exercise lazy R1 on both sides of the split
    full = train(opts, tmp_path / "full", progress=False)
    assert full.step == steps
    part = train(opts, tmp_path / "part", progress=False, stop_at=stop)
    assert part.step == stop
    resumed = train({}, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == steps
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    _assert_same_weights(a, b)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    # metrics.jsonl after resume logs each step once (plus the step where the first run stopped).
    part_steps, full_steps = _train_steps(tmp_path / "part"), _train_steps(tmp_path / "full")
    assert part_steps == sorted(set(part_steps)) and set(full_steps) <= set(part_steps)


def test_seeded_cpu_runs_are_reproducible_and_seeds_differ(tmp_path, tiny):
    opts = {**tiny, "model": "dcgan", "kimg": 0.128}
    train(opts, tmp_path / "a", progress=False)
    train(opts, tmp_path / "b", progress=False)
    train({**opts, "seed": 1}, tmp_path / "c", progress=False)
    a, b, c = (_state(tmp_path / n) for n in "abc")
    _assert_same_weights(a, b)
    assert not torch.equal(a["G"]["main.0.weight"], c["G"]["main.0.weight"])


def test_run_directory_layout_and_load_run(tmp_path, tiny):
    out = tmp_path / "run"
    train({**tiny, "model": "cgan", "kimg": 0.32, "keep": 2}, out, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert set(config) == {
        "model",
        "train",
        "dataset",
        "distributed",
        "versions",
        "given",
        "recipe",
    }
    assert config["given"] == sorted({*tiny, "model", "kimg", "keep"})  # the rest are defaults
    assert config["distributed"] == {"world_size": 1}
    assert config["model"]["kind"] == "cgan" and config["model"]["num_classes"] == 10
    assert config["dataset"]["dataset"] == "digits" and config["dataset"]["split"] == "train"
    assert "torch" in config["versions"]
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000008.pt", "ckpt-00000010.pt"]
    state = _state(out)
    for key in ("G", "G_ema", "D", "opt_G", "opt_D", "step", "rng"):
        assert key in state
    run = load_run(out)
    assert run.step == 10
    img = run.G_ema(torch.randn(3, 16), torch.tensor([0, 1, 2]))
    assert img.shape == (3, 1, 16, 16)
    assert (out / "samples" / "grid-00000010.png").is_file()
    assert (out / "loss.png").is_file() and (out / "progress.gif").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 10 and {"loss_D", "loss_G", "img_per_s"} <= set(records[-1])


def test_eval_hook_logs_and_keeps_best(tmp_path, tiny):
    scores = iter([5.0, 3.0, 4.0])
    seen = []

    def eval_fn(G_ema, step):
        assert not G_ema.training
        seen.append(step)
        return {"fd_classifier": next(scores)}

    out = tmp_path / "run"
    result = train(
        {**tiny, "model": "dcgan", "kimg": 0.384, "eval_every": 4}, out, eval_fn=eval_fn,
        progress=False,
    )  # fmt: skip
    assert seen == [4, 8, 12]
    assert result.best == {"key": "fd_classifier", "value": 3.0, "step": 8}
    assert load_checkpoint(out / "checkpoints" / "best.pt")["step"] == 8
    assert load_run(out, which="best").step == 8
    # What gan-export takes by default (auto): the best, not the last (step 12, FD 4.0).
    assert load_run(out, which="auto").step == 8 and load_run(out, which="latest").step == 12
    evals = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "eval" in r]
    assert [r["eval"]["fd_classifier"] for r in evals] == [5.0, 3.0, 4.0]


def test_divergence_stops_and_names_the_step(tmp_path, tiny):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+") as e:
        train({**tiny, "model": "dcgan", "kimg": 3.2, "lr": 1e30}, out, progress=False)
    message = str(e.value)
    # Any checkpoint that was kept holds finite weights, and the message says which one.
    for p in list_checkpoints(out):
        assert str(p) in message or p != list_checkpoints(out)[-1]
        state = load_checkpoint(p)
        assert all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())


def test_truncated_checkpoint_error_names_the_file(tmp_path, tiny):
    out = tmp_path / "run"
    train({**tiny, "model": "dcgan", "kimg": 0.128}, out, progress=False)
    ckpt = list_checkpoints(out)[-1]
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(ckpt)):
        load_run(out)
    with pytest.raises(CheckpointError, match=str(ckpt)):
        train({}, out, resume=True, progress=False)


@pytest.mark.parametrize(
    "model, extra",
    [
        ("cgan", {"loss": "wgan-gp", "n_critic": 2, "precision": "bf16"}),  # G draws bf16
        ("dcgan", {"loss": "hinge", "spectral_norm": True, "d_norm": "none"}),
        ("cgan", {"label_smoothing": 0.1, "instance_noise": 0.2, "precision": "bf16"}),
        ("stylegan", {"r1_every": 1, "channels_last": True}),
    ],
)
def test_losses_and_stabilisers_train(tmp_path, tiny, model, extra):
    result = train({**tiny, "model": model, "kimg": 0.128, **extra}, tmp_path / "r", progress=False)
    records = [r for r in map(json.loads, open(tmp_path / "r" / "metrics.jsonl")) if "loss_D" in r]
    assert result.step == 4 // extra.get("n_critic", 1) and records
    penalty = {"wgan-gp": "gp"}.get(extra.get("loss"), "r1" if model == "stylegan" else None)
    if penalty:
        assert all(penalty in r for r in records)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    for k, v in extra.items():
        assert config["train"].get(k, config["model"].get(k)) == v


def test_device_auto_falls_back_to_cpu_without_amp(monkeypatch):
    from training.trainer import autocast_dtype, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    assert autocast_dtype("auto", torch.device("cpu")) is None  # fp32: bit-reproducible on CPU
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserError, match="no CUDA device"):
        pick_device("cuda")
