"""The compiled modules and the build report."""

import shutil
import subprocess
import sys
import tarfile
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


def test_sdist_ships_the_compiled_sources(tmp_path):
    pytest.importorskip("build")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
         str(ROOT)], capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sdist,) = tmp_path.glob("skcl-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    assert sources and sources <= names
    assert {"setup.py", "pyproject.toml", "README.md", "skcl/base.py"} <= names
