"""gan-train from a user's point of view: bad input gives `error: ...`, exit 2, no traceback,
and leaves nothing behind.

Most cases call ``training.cli.main`` in-process (the same code path, without paying a torch import
per case); a few run the real console entry point in a subprocess."""

import json

import pytest
from PIL import Image

from tests.training.conftest import run_cli
from training.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ARGS = ["--resolution", "16", "--g-width", "8", "--d-width", "8", "--latent-dim", "16",
             "--eval-every", "0"]  # fmt: skip


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Run gan-train in-process; returns an object shaped like subprocess.CompletedProcess."""

    def run(*args):
        code = main(["--no-progress", *args])
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def _assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for f in fragments:
        assert f in last, last


@pytest.fixture
def folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken" / "a"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"not a png at all")
    one_class = tmp_path / "one" / "only"
    one_class.mkdir(parents=True)
    for i in range(4):
        Image.new("L", (20, 20), color=i * 40).save(one_class / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model", "vae"], ["unknown model 'vae'", "dcgan, cgan, stylegan"]),
        (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
        (["--resolution", "24"], ["resolution 24", "power of two"]),
        (["--resolution", "256"], ["resolution 256", "16 to 128"]),
        (["--batch-size", "5000"], ["batch size 5000 is larger than the dataset", "1438"]),
        (["--loss", "lsgan"], ["unknown loss 'lsgan'", "hinge"]),
        (["--device", "cuda"], ["no CUDA device"]),
        (["--kimg", "-1"], ["--kimg must be > 0"]),
        (["--ada-target", "1.5"], ["--ada-target must be in [0, 1), got 1.5"]),
        (["--ada-target", "0.6", "--ada-kimg", "0"], ["--ada-kimg must be > 0, got 0"]),
        (["--model", "cgan", "--latent-code", "10"], ["latent_code 10 not allowed", "dcgan"]),
        (["--latent-code", "1"], ["latent_code 1 not allowed", "from 2 to latent_dim (16)"]),
        (["--latent-code", "10", "--code-weight", "-1"], ["--code-weight must be >= 0, got -1"]),
        (
            ["--latent-code", "0", "--code-weight", "2"],
            ["--code-weight 2.0 weighs the loss of a latent code", "none"],
        ),
        (["--model", "stylegan", "--mapping-layers", "0"], ["mapping_layers must be >= 1, got 0"]),
    ],
)
def test_bad_arguments(tmp_path, cli, args, fragments):
    out = tmp_path / "run"
    argv = ["--out", str(out), *TINY_ARGS, "--kimg", "0.1", *args]
    if "--resolution" in args:
        argv = ["--out", str(out), "--kimg", "0.1", *args]
    proc = cli(*argv)
    _assert_user_error(proc, *fragments)
    assert not out.exists(), "a failed run must not leave a run directory"


def test_bad_arguments_in_a_real_process(tmp_path):
    proc = run_cli("--model", "vae", "--out", str(tmp_path / "run"))
    _assert_user_error(proc, "unknown model 'vae'")
    assert not (tmp_path / "run").exists()


def test_bad_image_folders(folders, cli):
    cases = [
        (f"folder:{folders / 'missing'}", ["does not exist"]),
        (f"folder:{folders / 'empty'}", ["no readable images"]),
        (f"folder:{folders / 'broken'}", ["cannot read image", "x.png"]),
    ]
    for spec, fragments in cases:
        out = folders / "run"
        _assert_user_error(cli("--dataset", spec, "--out", str(out), *TINY_ARGS), *fragments)
        assert not out.exists()
    # cgan needs classes; a folder with a single subfolder has none.
    proc = cli("--model", "cgan", "--dataset", f"folder:{folders / 'one'}", "--out",
                   str(folders / "run"), *TINY_ARGS)  # fmt: skip
    _assert_user_error(proc, "cgan", "at least 2 classes")


def test_existing_output_resume_and_conflicts(tmp_path, cli):
    out = tmp_path / "run"
    ok = cli("--out", str(out), *TINY_ARGS, "--kimg", "0.128", "--batch-size", "32")
    assert ok.returncode == 0, ok.stderr
    assert "run directory" in ok.stdout
    # A second run into the same folder would clobber it.
    _assert_user_error(cli("--out", str(out), *TINY_ARGS), "already exists", "--resume")
    # Resuming cannot change the model; it can extend the schedule.
    _assert_user_error(cli("--out", str(out), "--resume", "--g-width", "32"), "g-width 32")
    more = cli("--out", str(out), "--resume", "--kimg", "0.256")
    assert more.returncode == 0, more.stderr
    assert json.loads((out / "config.json").read_text())["train"]["kimg"] == 0.256
    assert (out / "checkpoints" / "ckpt-00000008.pt").is_file()
    _assert_user_error(cli("--out", str(tmp_path / "nope"), "--resume"), "not a run directory")


def test_corrupt_checkpoint_on_resume_names_the_file(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("--out", str(out), *TINY_ARGS, "--kimg", "0.128").returncode == 0
    ckpt = sorted((out / "checkpoints").glob("ckpt-*.pt"))[-1]
    ckpt.write_bytes(b"\x00garbage")
    _assert_user_error(run_cli("--out", str(out), "--resume"), str(ckpt), "corrupt")


def test_nan_loss_stops_with_step_and_exit_2(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("--out", str(out), *TINY_ARGS, "--kimg", "1", "--lr", "1e30")
    _assert_user_error(proc, "diverged at step")
    assert not out.exists()  # no checkpoint was good, so nothing is left behind


@pytest.mark.slow
def test_online_fd_keeps_best_checkpoint(tmp_path):
    """The CLI wires training.eval.online's FD-classifier in: logged, and best.pt kept by it."""
    out = tmp_path / "run"
    proc = run_cli("--out", str(out), *TINY_ARGS[:-2], "--kimg", "0.256", "--batch-size", "32",
                   "--eval-every", "4", env={"GANFORGE_HOME": str(tmp_path / "home")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    evals = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "eval" in r]
    assert [r["step"] for r in evals] == [4, 8]
    # Each evaluation is also a line that sets the figures beside the gate's rules.
    lines = [x for x in proc.stderr.splitlines() if "FD/floor" in x]
    assert len(lines) == 2 and lines[0].startswith("step 4 (0.1 kimg): FD/floor "), proc.stderr
    assert "(gate ≤ 6)" in lines[0] and "recall" in lines[0]
    best = min(evals, key=lambda r: r["eval"]["fd_classifier"])
    from training.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoints" / "best.pt")
    assert state["step"] == best["step"] and state["best"]["value"] == best["eval"]["fd_classifier"]


def test_help_shows_the_defaults_of_the_config_tables(monkeypatch):
    from training import train_config
    from training.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "generator learning rate (default: the recipe's rule)" in text
    assert "D steps per G step (default 1; wgan-gp 5)" in text
    # Read from the tables, not restated: a changed default shows up in --help.
    monkeypatch.setitem(train_config.LOSS_DEFAULTS, "wgan-gp", {"n_critic": 7})
    text = " ".join(build_parser().format_help().split())
    assert "D steps per G step (default 1; wgan-gp 7)" in text
