"""Build script: compiles fastq/_speedups with Cython when it can, and installs without them when it cannot."""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

SPEEDUPS_DIR = os.path.join("fastq", "_speedups")


def _pkg_config(name):
    """Compiler and linker flags for a pkg-config package, or None when it is absent."""
    if shutil.which("pkg-config") is None:
        return None
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags", name], text=True).split()
        libs = subprocess.check_output(["pkg-config", "--libs", name], text=True).split()
    except subprocess.CalledProcessError:
        return None
    return cflags, libs


def _extensions():
    if os.environ.get("FASTQ_NO_SPEEDUPS") == "1":
        print("fastq: FASTQ_NO_SPEEDUPS=1, building the pure-Python package", file=sys.stderr)
        return []
    sources = sorted(glob.glob(os.path.join(SPEEDUPS_DIR, "*.pyx")))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("fastq: Cython is not installed, building without speedups", file=sys.stderr)
        return []
    from setuptools import Extension

    rabbitmq = _pkg_config("librabbitmq")
    extensions = []
    for source in sources:
        module = source[:-4].replace(os.sep, ".")
        needs_rabbitmq = "amqp" in os.path.basename(source) or "consumer" in os.path.basename(source)
        if needs_rabbitmq and rabbitmq is None:
            print(f"fastq: rabbitmq-c not found by pkg-config, skipping {module}", file=sys.stderr)
            continue
        cflags, libs = rabbitmq if needs_rabbitmq else ([], [])
        extensions.append(
            Extension(module, [source], extra_compile_args=["-O2", *cflags], extra_link_args=libs)
        )
    return cythonize(extensions, language_level=3, quiet=True) if extensions else []


class OptionalBuildExt(build_ext):
    """Treat a failed C build as 'no speedups' unless FASTQ_REQUIRE_SPEEDUPS=1."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # the compiler or linker is missing or failed
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc):
        if os.environ.get("FASTQ_REQUIRE_SPEEDUPS") == "1":
            raise
        print(f"fastq: building speedups failed ({exc}); installing pure Python", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
