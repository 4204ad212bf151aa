"""The default recipe (training/recipe.py): settings follow rules on the facts, never the name."""

import json

import numpy as np
import pytest
from PIL import Image

from training.recipe import ADA_BELOW_IMAGES, Facts, choose
from training.train_config import resolve_with_recipe

DIGITS_LIKE = Facts("dcgan", 1438, 32, 1, 10, "cpu", True)


def _values(facts: Facts) -> dict:
    return {k: c.value for k, c in choose(facts).items()}


def test_rules_follow_the_facts():
    base = _values(DIGITS_LIKE)
    assert base["precision"] == "bf16" and base["channels_last"] is True
    assert base["latent_code"] == 10 and base["ada_target"] == 0.6 and base["eval_every"] > 0
    # No native bf16: fp32, not an emulated bf16 that is slower than fp32.
    assert _values(Facts("dcgan", 1438, 32, 1, 10, "cpu", False))["precision"] == "fp32"
    # Unlabelled data: no code (nothing to have one value per), no evaluation classifier.
    unlabelled = _values(Facts("dcgan", 1438, 32, 3, 0, "cpu", True))
    assert unlabelled["latent_code"] == 0 and unlabelled["eval_every"] == 0
    # The code has one value per class, capped.
    assert _values(Facts("dcgan", 9000, 32, 3, 3, "cpu", True))["latent_code"] == 3
    assert _values(Facts("dcgan", 9000, 32, 3, 100, "cpu", True))["latent_code"] == 16
    # ADA only below the size where D memorises the data.
    assert _values(Facts("dcgan", ADA_BELOW_IMAGES, 32, 1, 10, "cpu", True))["ada_target"] == 0
    # The cGAN is given the class, so it has no code; StyleGAN-lite is narrower on a CPU.
    cgan = _values(Facts("cgan", 1438, 32, 1, 10, "cpu", True))
    assert "latent_code" not in cgan and cgan["mode_seeking"] > 0
    style = _values(Facts("stylegan", 1438, 32, 1, 10, "cpu", True))
    assert style["g_width"] < base["g_width"] and style["lr"] == 4e-3
    cuda = _values(Facts("dcgan", 1438, 32, 1, 10, "cuda", True))
    assert cuda["g_width"] == 64 and cuda["batch_size"] == 64 and base["batch_size"] == 32
    # Every rule says why.
    assert all(c.rule for c in choose(DIGITS_LIKE).values())


def test_the_recipe_reads_facts_not_the_dataset_name(tmp_path):
    """The embedded digits and the same images in a folder (same size, resolution, channels and
    classes) get the same settings: nothing is keyed by the dataset's name."""
    from training.datasets import load_digits

    # Both splits go into the folder, so that its fixed split holds as many training images.
    for split in ("train", "heldout"):
        ds = load_digits(32, split)
        x, y = ds.as_tensors()
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            (tmp_path / str(int(label))).mkdir(exist_ok=True)
            pixels = ((img[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / str(int(label)) / f"{split}-{i}.png")
    records = {}
    for name in ("digits", f"folder:{tmp_path}"):
        _, _, record = resolve_with_recipe({"model": "dcgan", "dataset": name, "resolution": 32})
        records[name] = record
    digits, folder = records["digits"], records[f"folder:{tmp_path}"]
    assert digits["facts"]["images"] == pytest.approx(folder["facts"]["images"], rel=0.01)
    strip = {"dataset"}
    assert {k: v for k, v in digits["settings"].items() if k not in strip} == {
        k: v for k, v in folder["settings"].items() if k not in strip
    }


def test_given_options_win_and_the_record_says_which_was_which():
    cfg, model_kwargs, record = resolve_with_recipe(
        {"model": "dcgan", "dataset": "digits", "resolution": 32, "lr": 1e-4, "latent_code": 0}
    )
    assert cfg.lr == 1e-4 and model_kwargs["latent_code"] == 0
    settings = record["settings"]
    assert settings["lr"] == {"value": 1e-4, "from": "given"}
    assert settings["latent_code"]["from"] == "given"
    assert settings["r1_gamma"]["from"].startswith("dcgan:")
    assert settings["ada_target"]["from"].startswith("1,438 images")
    assert record["facts"]["classes"] == 10 and record["facts"]["images"] == 1438
    # A loss's requirement beats the recipe's rule and says so.
    cfg, _, record = resolve_with_recipe({"model": "dcgan", "loss": "wgan-gp"})
    assert cfg.lr == 1e-4 and record["settings"]["lr"]["from"] == "--loss wgan-gp"


def test_the_rules_batch_is_shared_evenly_by_the_processes():
    cfg, _, record = resolve_with_recipe({"model": "dcgan"}, world=3)
    assert cfg.batch_size == 33 and "multiple of 3" in record["settings"]["batch_size"]["from"]
    assert resolve_with_recipe({"model": "dcgan"}, world=2)[0].batch_size == 32


def test_an_odd_batch_turns_the_mode_seeking_rule_off_instead_of_refusing():
    cfg, _, record = resolve_with_recipe({"model": "cgan", "batch_size": 33})
    assert cfg.mode_seeking == 0 and "odd batch" in record["settings"]["mode_seeking"]["from"]
    with pytest.raises(Exception, match="--mode-seeking pairs the batch"):
        resolve_with_recipe({"model": "cgan", "batch_size": 33, "mode_seeking": 0.1})


def test_a_run_records_its_recipe_in_config_json(tmp_path, tiny):
    from training.trainer import train

    train({**tiny, "model": "stylegan", "kimg": 0.064, "eval_every": 0}, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    settings = config["recipe"]["settings"]
    assert settings["g_width"] == {"value": tiny["g_width"], "from": "given"}
    assert settings["lr"]["from"].startswith("stylegan:") and config["train"]["lr"] == 4e-3
    assert settings["latent_code"]["value"] == config["model"]["latent_code"] == 10
    assert config["recipe"]["facts"]["family"] == "stylegan"
