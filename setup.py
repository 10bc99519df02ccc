"""Build skcl's compiled kernels.

``skcl._C`` (C++, OpenMP where the compiler supports it) is always built.
``skcl._C_cuda`` is built only where ``nvcc`` and a CUDA toolkit are found; it
takes raw device pointers from ``skcl.kernels`` and links the CUDA runtime
statically, so it does not link against libtorch.

Environment switches
--------------------
SKCL_NATIVE=0     do not add ``-march=native`` (portable wheels).
SKCL_NO_CUDA=1    skip the CUDA extension even where nvcc exists.
SKCL_CUDA_ARCH    nvcc ``-gencode`` targets, e.g. ``"80;90"`` (default: 80;90 and PTX).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent.resolve()
CSRC = "csrc"


def _compiler_accepts(compiler, flags, link_flags=()):
    """Whether ``compiler`` compiles and links a trivial program with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.cpp")
        src.write_text("int main() { return 0; }\n")
        try:
            objects = compiler.compile([str(src)], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(
                objects, "probe", output_dir=tmp, extra_postargs=list(link_flags)
            )
        except Exception:
            return False
    return True


def _find_cuda_home():
    if os.environ.get("SKCL_NO_CUDA") == "1":
        return None
    nvcc = shutil.which("nvcc")
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").exists() and Path(home, "include").exists():
            return Path(home)
    if nvcc:
        home = Path(nvcc).resolve().parent.parent
        if Path(home, "include", "cuda_runtime.h").exists():
            return home
    return None


def _cuda_gencode():
    archs = os.environ.get("SKCL_CUDA_ARCH", "80;90").split(";")
    flags = []
    for arch in archs:
        arch = arch.strip()
        if arch:
            flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    last = archs[-1].strip()
    flags += ["-gencode", f"arch=compute_{last},code=compute_{last}"]
    return flags


class SkclBuildExt(build_ext):
    """Probe compiler flags, then compile ``.cu`` sources with nvcc."""

    def build_extensions(self):
        cc = self.compiler
        opt = ["-O3"]
        if os.environ.get("SKCL_NATIVE", "1") != "0" and _compiler_accepts(cc, ["-march=native"]):
            opt.append("-march=native")
        openmp = _compiler_accepts(cc, ["-fopenmp"], ["-fopenmp"])
        for ext in self.extensions:
            ext.extra_compile_args += opt
            ext.define_macros.append(("SKCL_CXX_FLAGS", '"' + " ".join(opt) + '"'))
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()

    def build_extension(self, ext):
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        if cu_sources:
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            ext.extra_objects = list(ext.extra_objects or []) + self._nvcc_compile(cu_sources)
        super().build_extension(ext)

    def _nvcc_compile(self, sources):
        cuda_home = _find_cuda_home()
        nvcc = str(cuda_home / "bin" / "nvcc")
        out_dir = Path(self.build_temp, "cuda")
        out_dir.mkdir(parents=True, exist_ok=True)
        objects = []
        for src in sources:
            obj = out_dir / (Path(src).stem + ".o")
            cmd = [
                nvcc, "-c", src, "-o", str(obj), "-O3", "-std=c++17",
                "-Xcompiler", "-fPIC", "-I", str(ROOT / CSRC),
                *_cuda_gencode(),
            ]
            print(" ".join(cmd), file=sys.stderr)
            subprocess.check_call(cmd)
            objects.append(str(obj))
        return objects


def _extensions():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cpp"))
    exts = [
        Pybind11Extension(
            "skcl._C",
            sources,
            include_dirs=[CSRC],
            cxx_std=17,
        )
    ]
    cuda_home = _find_cuda_home()
    cuda_dir = ROOT / CSRC / "cuda"
    cuda_sources = sorted(
        str(p.relative_to(ROOT)) for p in cuda_dir.glob("*") if p.suffix in (".cpp", ".cu")
    )
    if cuda_home is not None and any(s.endswith(".cu") for s in cuda_sources):
        lib_dir = cuda_home / "lib64"
        if not lib_dir.exists():
            lib_dir = cuda_home / "lib"
        exts.append(
            Pybind11Extension(
                "skcl._C_cuda",
                cuda_sources,
                include_dirs=[CSRC, str(cuda_home / "include")],
                library_dirs=[str(lib_dir)],
                libraries=["cudart_static", "dl", "rt", "pthread"],
                define_macros=[("SKCL_CUDA_HOME", f'"{cuda_home}"')],
                cxx_std=17,
            )
        )
    return exts


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": SkclBuildExt},
    package_data={"skcl": ["data/*"]},
    include_package_data=False,
)
