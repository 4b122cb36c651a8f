"""Builds the kortexdl wheel: CMake builds libkortexdl (static, PIC) and the
kortexdl._core extension from the repository root (this directory's parent),
so the extension is self-contained.

    pip install --no-build-isolation ./python_bindings     # offline

The CMake build lives in python_bindings/build/cmake-<python tag>/ and writes
the module straight into setuptools' build folder, so it never touches the
in-place development module (scripts/build.sh, python_bindings/kortexdl/).
Extra CMake arguments: KORTEX_CMAKE_ARGS="-DKORTEX_BACKEND=cblas ...".
Parallel jobs: CMAKE_BUILD_PARALLEL_LEVEL (default: all CPUs).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def read_version():
    header = ROOT / "include" / "kortexdl" / "version.hpp"
    match = re.search(r'kVersion\s*=\s*"([^"]+)"', header.read_text(encoding="utf-8"))
    if not match:
        raise RuntimeError(f"cannot find kVersion in {header}")
    return match.group(1)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not (ROOT / "CMakeLists.txt").exists():
            raise RuntimeError(
                f"the KortexDL sources are not at {ROOT}; build from a checkout "
                "(pip install --no-build-isolation ./python_bindings)"
            )
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("cmake is needed to build kortexdl (apt-get install cmake)")
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        output_dir = target.parent
        output_dir.mkdir(parents=True, exist_ok=True)
        build_dir = HERE / "build" / f"cmake-{sys.implementation.cache_tag}"
        config = "Debug" if self.debug else "Release"

        args = [
            cmake,
            "-S", str(ROOT),
            "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={config}",
            "-DKORTEX_BUILD_PYTHON=ON",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DKORTEX_BUILD_TESTS=OFF",
            "-DKORTEX_BUILD_BENCHMARKS=OFF",
            "-DKORTEX_BUILD_EXAMPLES=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DKORTEX_PYTHON_OUTPUT_DIR={output_dir}",
        ]
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            args += ["-G", "Ninja"]
        args += shlex.split(os.environ.get("KORTEX_CMAKE_ARGS", ""))
        subprocess.run(args, check=True)

        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run(
            [cmake, "--build", str(build_dir), "--config", config, "--target", "kortexdl_python", "-j", jobs],
            check=True,
        )
        if not target.exists():
            built = sorted(output_dir.glob("_core*.so"))
            if len(built) != 1:
                raise RuntimeError(f"CMake did not produce {target.name} in {output_dir}: {built}")
            built[0].rename(target)


setup(
    version=read_version(),
    packages=["kortexdl"],
    package_data={"kortexdl": ["py.typed", "*.pyi"]},
    zip_safe=False,
    ext_modules=[CMakeExtension("kortexdl._core")],
    cmdclass={"build_ext": CMakeBuild},
)
