"""Every console script follows the same conventions: `--version` prints "<prog> <version>" (the
package's version), `-q` leaves only warnings and errors on stderr, `-v` adds debug lines, and
user mistakes still end in an `error: ...` line with exit status 2."""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Read with re, not tomllib: the project supports Python 3.10.
_TOML = (REPO / "pyproject.toml").read_text()
VERSION = re.search(r'^version = "([^"]+)"', _TOML, re.M).group(1)
_SCRIPTS_TABLE = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", _TOML, re.M | re.S).group(1)
SCRIPTS = dict(re.findall(r'^([\w-]+) = "([^"]+)"', _SCRIPTS_TABLE, re.M))
BIN = Path(sys.executable).parent


def _run(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_the_installed_package_version_is_pyprojects():
    assert metadata.version("ganforge") == VERSION
    assert set(SCRIPTS) == {"gan-train", "gan-eval", "gan-export", "gan-sample"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_answers_version(script):
    r = _run(BIN / script, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{script} {VERSION}" and r.stderr == ""


@pytest.mark.parametrize("argv", [("gan-eval", "stats"), ("gan-export", "gate")])
def test_subcommands_answer_version_too(argv):
    r = _run(BIN / argv[0], argv[1], "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"{' '.join(argv)} {VERSION}"


def test_quiet_silences_info_verbose_adds_debug_errors_stay(tmp_path, capsys):
    from training.eval.cli import main

    stats = tmp_path / "fid_stats.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    out = tmp_path / "ref.npz"
    base = ["import-stats", str(stats), "--extractor", "inception", "--out", str(out)]

    def run(*argv):
        rc = main(list(argv))
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    rc, stdout, err = run(*base)
    assert rc == 0 and err.startswith("imported ") and "read mu" not in err
    assert '"out": ' in stdout  # the result stays on stdout
    for argv in (("-q", *base), (*base, "-q")):  # before or after the subcommand
        assert run(*argv) == (0, stdout, "")
    rc, _, err = run(*base, "-v")
    assert rc == 0 and "read mu (2048,) and sigma (2048, 2048)" in err
    rc, _, err = run("-q", "import-stats", str(tmp_path / "nope.npz"), "--extractor", "inception",
                     "--out", str(out))  # fmt: skip
    assert rc == 2 and err.startswith("error: ") and "does not exist" in err


def test_verbose_and_quiet_together_are_refused():
    r = _run(BIN / "gan-sample", "bundle", "-v", "-q")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
