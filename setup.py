"""Build script: compiles fastq/_speedups with Cython when it can, and installs without them when it cannot."""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

SPEEDUPS_DIR = os.path.join("fastq", "_speedups")

# Plain Python modules Cython compiles as well (one file, two builds): interpreted where
# they stand, they serve the pure-Python twins; compiled, under the name on the left, the
# accelerated ones (a .pxd of that name in _speedups/ may give them C types). With
# annotation_typing off an annotation such as `list` or `float` never becomes a C type or
# a type check: both builds behave alike.
PURE_PYTHON_SPEEDUPS = {
    "fastq._speedups._ack_decisions": os.path.join("fastq", "worker", "_ack_decisions.py"),
    "fastq._speedups._consumer_loop": os.path.join("fastq", "worker", "_consumer_loop.py"),
    "fastq._speedups._amqp_decisions": os.path.join("fastq", "brokers", "_amqp_decisions.py"),
}

# The build-time switches (the same FASTQ_NO_SPEEDUPS / FASTQ_REQUIRE_SPEEDUPS the package
# reads at import). FASTQ_STATIC_RABBITMQ=1 links rabbitmq-c into the extensions, for the
# wheels ci/wheel.sh builds. It is an explicit switch, not "whenever a wheel is built":
# pip builds a wheel for every source install too, and a source install should use the
# distribution's shared librabbitmq (its security updates apply; Fedora ships no .a).
# A static build is never allowed to fall back: a wheel without its C path is a bug.
NO_SPEEDUPS = os.environ.get("FASTQ_NO_SPEEDUPS") == "1"
STATIC_RABBITMQ = os.environ.get("FASTQ_STATIC_RABBITMQ") == "1"
REQUIRE_SPEEDUPS = os.environ.get("FASTQ_REQUIRE_SPEEDUPS") == "1" or STATIC_RABBITMQ

REINSTALL = """\
  then reinstall fastq, building from source again:
      pip install --force-reinstall --no-deps --no-cache-dir fastq    (from PyPI)
      pip install -e .                                                (from a checkout)
  (--no-cache-dir: pip would otherwise reuse a pure-Python wheel it built before)"""
RABBITMQ_FIX = f"""\
  Install rabbitmq-c's headers and pkg-config:
      Debian/Ubuntu:  sudo apt-get install librabbitmq-dev pkg-config
      Fedora/RHEL:    sudo dnf install librabbitmq-devel pkgconf-pkg-config
{REINSTALL}"""
COMPILER_FIX = f"""\
  Install a C compiler and Python's headers:
      Debian/Ubuntu:  sudo apt-get install gcc python3-dev
      Fedora/RHEL:    sudo dnf install gcc python3-devel
{REINSTALL}"""

# Debian's librabbitmq.a is compiled as position-independent *executable* code: it reads
# libc's `stderr` (in amqp_abort) through a PC-relative relocation, which a shared object
# cannot carry ("recompile with -fPIC"); every other reference in it is fine in a .so.
# ld's --wrap=stderr points that one reference at this hidden copy, which a constructor
# fills from the real `stderr` when the extension loads.
STDERR_SHIM = """\
/* Written by fastq's setup.py for static rabbitmq-c builds; see the comment there. */
#include <stdio.h>
extern FILE *__real_stderr;
__attribute__((visibility("hidden"))) FILE *__wrap_stderr;
__attribute__((constructor)) static void fastq_copy_stderr(void) { __wrap_stderr = __real_stderr; }
"""

#: (headline, reason, fix) for each cause of a compiled module left out; build_py prints them.
_left_out = []


def _notice(headline, reason, fix):
    """Tell the person installing that the C path is missing, once, where they will see it.

    pip shows a successful build's output only with -v, so the notice goes to the
    terminal pip runs in (/dev/tty) when there is one, and to stderr (build logs, CI)
    when there is none.
    """
    rule = "=" * 78
    text = (f"\n{rule}\nfastq: {headline}\n  Reason: {reason}\n  fastq still works, on its "
            f"pure-Python twins (amqp:// then needs: pip install 'fastq[amqp]').\n{fix}\n"
            f"  FASTQ_REQUIRE_SPEEDUPS=1 makes this a build error instead.\n{rule}\n")
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(text)
    except OSError:
        sys.stderr.write(text)


def _refuse(reason, fix):
    """Fail the build: FASTQ_REQUIRE_SPEEDUPS=1 or a static build, and no C path."""
    switch = "FASTQ_STATIC_RABBITMQ=1" if STATIC_RABBITMQ else "FASTQ_REQUIRE_SPEEDUPS=1"
    sys.exit(f"fastq: {switch} but the compiled speedups cannot be built: {reason}\n{fix}")


def _pkg_config(name, *args):
    """pkg-config's answer split into words, or None when pkg-config or the package is absent."""
    try:
        out = subprocess.run(["pkg-config", *args, name], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.split() if out.returncode == 0 else None


def _rabbitmq_flags():
    """(compile args, link args, extra objects) for rabbitmq-c, or a reason it is missing."""
    if shutil.which("pkg-config") is None:
        return "pkg-config is not installed, so rabbitmq-c cannot be located"
    cflags = _pkg_config("librabbitmq", "--cflags")
    if cflags is None:
        return "pkg-config cannot find librabbitmq (rabbitmq-c's headers are not installed)"
    if not STATIC_RABBITMQ:
        return cflags, _pkg_config("librabbitmq", "--libs"), []
    libdir = _pkg_config("librabbitmq", "--variable=libdir")
    archive = os.path.join(libdir[0] if libdir else "", "librabbitmq.a")
    if not os.path.exists(archive):
        return f"no static rabbitmq-c archive at {archive!r}"
    # librabbitmq's own private dependencies (openssl, rt), minus librabbitmq itself
    static_libs = _pkg_config("librabbitmq", "--libs", "--static")
    if static_libs is None:
        return "pkg-config cannot list librabbitmq's static dependencies (is libssl-dev installed?)"
    private = [f for f in static_libs if f != "-lrabbitmq"]
    shim = os.path.join("build", "fastq-static", "rabbitmq_stderr_shim.c")
    os.makedirs(os.path.dirname(shim), exist_ok=True)
    with open(shim, "w") as fh:
        fh.write(STDERR_SHIM)
    # --exclude-libs keeps rabbitmq-c's symbols private to each extension, so another
    # librabbitmq in the process cannot interpose; --as-needed drops openssl from an
    # extension that calls none of rabbitmq-c.
    link = ["-Wl,--as-needed", "-Wl,--exclude-libs,ALL", "-Wl,--wrap=stderr", *private]
    return cflags, link, [archive, shim]


def _extensions():
    if NO_SPEEDUPS:
        print("fastq: FASTQ_NO_SPEEDUPS=1, building the pure-Python package", file=sys.stderr)
        return []
    sources = {source[:-4].replace(os.sep, "."): source
               for source in sorted(glob.glob(os.path.join(SPEEDUPS_DIR, "*.pyx")))}
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        reason = "Cython is not installed in the build environment"
        fix = ("  The build runs without isolation (pyproject.toml would have brought Cython):\n"
               "      pip install 'Cython>=3.0', then reinstall fastq the same way.")
        if REQUIRE_SPEEDUPS:
            _refuse(reason, fix)
        _left_out.append(("installed WITHOUT its compiled speedups", reason, fix))
        return []
    from setuptools import Extension

    rabbitmq = _rabbitmq_flags()
    extensions = []
    for module, source in {**sources, **PURE_PYTHON_SPEEDUPS}.items():
        name = module.rsplit(".", 1)[1]
        needs_rabbitmq = "amqp" in name or "consumer" in name
        if not needs_rabbitmq:
            extensions.append(Extension(module, [source], extra_compile_args=["-O2"]))
            continue
        if isinstance(rabbitmq, str):
            if REQUIRE_SPEEDUPS:
                _refuse(rabbitmq, RABBITMQ_FIX)
            left_out = ("installed WITHOUT its compiled rabbitmq-c path", rabbitmq, RABBITMQ_FIX)
            if left_out not in _left_out:  # one notice for all the modules it leaves out
                _left_out.append(left_out)
            print(f"fastq: {rabbitmq}; skipping {module}", file=sys.stderr)
            continue
        cflags, libs, objects = rabbitmq
        sources_here = [source] + [o for o in objects if o.endswith(".c")]
        extensions.append(Extension(
            module, sources_here, extra_compile_args=["-O2", *cflags], extra_link_args=libs,
            extra_objects=[o for o in objects if not o.endswith(".c")]))
    pyx = [e for e in extensions if e.name not in PURE_PYTHON_SPEEDUPS]
    plain = [e for e in extensions if e.name in PURE_PYTHON_SPEEDUPS]
    compiled = cythonize(pyx, language_level=3, quiet=True) if pyx else []
    if plain:
        # their C goes to build/, not beside the plain modules in the package
        compiled += cythonize(plain, language_level=3, quiet=True,
                              build_dir=os.path.join("build", "cython"),
                              compiler_directives={"annotation_typing": False})
    return compiled


class OptionalBuildExt(build_ext):
    """Treat a failed C build as 'no speedups' unless FASTQ_REQUIRE_SPEEDUPS=1."""

    def initialize_options(self):
        super().initialize_options()
        self._failed = []

    def run(self):
        try:
            super().run()
        except Exception as exc:  # the compiler or linker is missing or failed
            self._fallback(exc)
        if self._failed:
            _notice("installed WITHOUT its compiled speedups (the C build failed)",
                    f"compiling {', '.join(self._failed)} failed (pip install -v shows why)",
                    COMPILER_FIX)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc, ext.name)

    def _fallback(self, exc, name="fastq._speedups"):
        if REQUIRE_SPEEDUPS:
            raise
        print(f"fastq: building {name} failed ({exc}); installing pure Python", file=sys.stderr)
        self._failed.append(name)


class NoticeBuildPy(build_py):
    """Prints the notice: build_py runs once per real build, not when pip asks for metadata."""

    def run(self):
        super().run()
        for headline, reason, fix in _left_out:
            _notice(headline, reason, fix)
        _left_out.clear()


# The generated C (2 MB) would otherwise ride along as package data: the sdist needs it,
# an installed package does not.
setup(ext_modules=_extensions(),
      cmdclass={"build_ext": OptionalBuildExt, "build_py": NoticeBuildPy},
      exclude_package_data={"fastq._speedups": ["*.c"]})
