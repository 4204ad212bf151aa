"""gancore.cuda on a machine without CUDA: what it reports, what it tells a user, and its
fallback loader (onnxruntime < 1.21) on real shared objects built here."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys

import pytest

from gancore import cuda


def test_a_cpu_onnxruntime_has_nothing_to_preload_and_says_so(capsys):
    # preload() answers once per process: forget what a test that faked a CUDA provider got.
    cuda.preload.cache_clear()
    assert not cuda.has_cuda_provider() and cuda.provider_library() is None
    assert cuda.preload().startswith("none")
    assert cuda.load_error() is None
    assert cuda.main([]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["cuda_provider_built"] is False
    assert "install onnxruntime-gpu" in err


def test_usage_errors_exit_2(capsys):
    assert cuda.main(["--nope"]) == 2
    assert "usage: python -m gancore.cuda" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "lib", "says"),
    [
        ("libcuda.so.1: cannot open shared object file: No such file or directory",
         "libcuda.so.1", "no GPU is visible"),
        ("libcublasLt.so.13: cannot open shared object file: No such file or directory",
         "libcublasLt.so.13", "install onnxruntime-gpu[cuda,cudnn]"),
        ("undefined symbol: cudnnCreate", None, "undefined symbol: cudnnCreate"),
    ],
)  # fmt: skip
def test_the_refusal_names_the_missing_library_and_what_to_do(error, lib, says):
    assert cuda.missing_library(error) == lib
    text = cuda.refusal(error)
    assert says in text and (lib is None or lib in text)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build .so files")
def test_the_fallback_loads_wheel_libraries_whose_dependencies_come_later(tmp_path, monkeypatch):
    """Like the NVIDIA wheels: nvidia/<pkg>/lib/*.so, one needing another that the loader cannot
    find by itself and that sorts after it. After the fallback, both resolve by name."""
    site = tmp_path / "site"
    dep_dir, user_dir = site / "nvidia" / "zdep" / "lib", site / "nvidia" / "auser" / "lib"
    dep_dir.mkdir(parents=True)
    user_dir.mkdir(parents=True)
    dep, user = "libganforge_dep_t.so.1", "libganforge_user_t.so.1"
    (tmp_path / "dep.c").write_text("int dep(void) { return 41; }\n")
    (tmp_path / "user.c").write_text("int dep(void);\nint user(void) { return dep() + 1; }\n")
    cc = ["cc", "-shared", "-fPIC"]
    subprocess.run([*cc, f"-Wl,-soname,{dep}", "-o", dep_dir / dep, tmp_path / "dep.c"], check=True)
    subprocess.run([*cc, f"-Wl,-soname,{user}", "-o", user_dir / user, tmp_path / "user.c",
                    f"-L{dep_dir}", f"-l:{dep}"], check=True)  # fmt: skip
    with pytest.raises(OSError, match=dep):  # what ONNX Runtime meets without a preload
        ctypes.CDLL(str(user_dir / user))

    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    assert cuda.nvidia_lib_dirs()[:2] == [user_dir, dep_dir]  # torch's own follow, if any
    cuda._load_folders([user_dir, dep_dir])
    assert ctypes.CDLL(user).user() == 42  # found by name: loaded, with its dependency
