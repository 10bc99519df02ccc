"""The compiled modules and the build report."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skcl import kernels

ROOT = Path(__file__).resolve().parents[1]


def test_backend_info_reports_the_cpu_build():
    info = kernels.backend_info()
    cpu = info["cpu"]
    assert cpu["compiled"] is True
    assert cpu["compiler"].split()[0] in {"gcc", "clang", "msvc"}
    assert cpu["cxx_standard"] >= 201703
    assert isinstance(cpu["openmp"], bool)
    assert cpu["max_threads"] >= 1
    assert "-O3" in cpu["flags"]


def test_backend_info_reports_cuda_honestly():
    cuda = kernels.backend_info()["cuda"]
    assert isinstance(cuda["compiled"], bool)
    assert cuda["available"] == (cuda["compiled"] and torch.cuda.is_available())
    if shutil.which("nvcc") and cuda["compiled"]:
        assert cuda["compiled_runtime_version"] > 0


def test_missing_compiled_module_is_an_install_error():
    code = "import sys; sys.modules['skcl._C'] = None; import skcl.kernels"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "skcl._C is missing: skcl was not built" in proc.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list tracked files")
def test_sdist_manifest_ships_the_sources():
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert "graft csrc" in manifest
    tracked = subprocess.run(["git", "ls-files", "csrc"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert "csrc/bindings.cpp" in tracked
