"""Build of fastmlr's one compiled extension, ``fastmlr._ckernels`` (Cython + OpenMP).

Everything else about the package is declared in ``pyproject.toml``.  The extension
is optional at install time: if it cannot be compiled (no C compiler, no Cython),
``pip install`` still succeeds with a warning and the ``cython`` backend is simply
unavailable.  With ``FASTMLR_REQUIRE_CYTHON=1`` a failed build is an error instead;
CI sets it, so a broken extension can never hide behind the fallback.

The kernels use typed memoryviews only, so no NumPy headers are needed.  OpenMP is
tried first; a compiler without it builds the same kernels serially (with a warning).
Floating-point contraction is turned off so that the results are bitwise equal to
those of the Numba kernels.  The default build is portable (baseline instruction set);
``FASTMLR_NATIVE=1`` compiles for the building machine's CPU, as Numba does, which
speeds up the vectorized loops (wider vectors) but makes a binary that may not run
on an older CPU.
"""

import os
import sys
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE_ENV = "FASTMLR_REQUIRE_CYTHON"
NATIVE_ENV = "FASTMLR_NATIVE"  # =1: compile for this machine's CPU (not for wheels to share)
BOUNDSCHECK_ENV = "FASTMLR_CYTHON_BOUNDSCHECK"  # =1: a checked build, for the tests only

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "nonecheck": False,
    "cdivision": True,
}
if os.environ.get(BOUNDSCHECK_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
    # every memoryview access checked: a kernel that reads past an array raises
    DIRECTIVES.update(boundscheck=True, initializedcheck=True)

# (compile args, link args) per compiler family, with and without OpenMP
FLAGS = {
    "msvc": ((["/O2", "/fp:precise", "/openmp"], []), (["/O2", "/fp:precise"], [])),
    "unix": (
        (["-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp"], ["-fopenmp"]),
        (["-O3", "-ffp-contract=off", "-fno-fast-math"], []),
    ),
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _required() -> bool:
    return _flag(REQUIRE_ENV)


def _warn(message: str) -> None:
    bar = "!" * 78
    text = textwrap.fill(message, 76, initial_indent="  ", subsequent_indent="  ")
    sys.stderr.write(f"\n{bar}\n  WARNING (fastmlr):\n{text}\n{bar}\n\n")
    sys.stderr.flush()


class OptionalBuildExt(build_ext):
    """build_ext that cythonizes lazily, tries OpenMP, and may fail softly."""

    def finalize_options(self):
        # cythonize before setuptools finalizes the extensions it will build
        self._cython_error = None
        try:
            from Cython.Build import cythonize

            self.distribution.ext_modules = cythonize(
                self.distribution.ext_modules, compiler_directives=DIRECTIVES, quiet=True,
                force=True,  # a checked and an unchecked build never share a stale .c
            )
        except Exception as exc:  # Cython missing, or the .pyx does not translate
            self._cython_error = exc
            self.distribution.ext_modules = []
        super().finalize_options()

    def run(self):
        if self._cython_error is not None:
            self._failed(self._cython_error)
            return
        try:
            super().run()
        except Exception as exc:  # no compiler at all, or a compile error without OpenMP too
            self._failed(exc)

    def build_extension(self, ext):
        family = "msvc" if self.compiler.compiler_type == "msvc" else "unix"
        with_omp, without_omp = FLAGS[family]
        base_compile = list(ext.extra_compile_args or [])
        if family == "unix" and _flag(NATIVE_ENV):
            # the wider vectors Numba gets from compiling for the host; same bits, as
            # contraction stays off and no loop is reassociated
            base_compile.append("-march=native")
        base_link = list(ext.extra_link_args or [])
        ext.extra_compile_args, ext.extra_link_args = base_compile + with_omp[0], base_link + with_omp[1]
        try:
            super().build_extension(ext)
            return
        except Exception as exc:
            first = exc
        _warn(
            f"building {ext.name} with OpenMP failed ({first}); retrying without OpenMP, "
            "so the Cython kernels will run on one thread."
        )
        ext.extra_compile_args, ext.extra_link_args = base_compile + without_omp[0], base_link + without_omp[1]
        super().build_extension(ext)

    def _failed(self, exc):
        if _required():
            raise RuntimeError(
                f"{REQUIRE_ENV} is set and the Cython extension fastmlr._ckernels failed to build: {exc}"
            ) from exc
        _warn(
            f"the Cython extension fastmlr._ckernels could not be built ({type(exc).__name__}: {exc}). "
            "fastmlr is installed without the 'cython' backend; the 'numba' and 'numpy' backends "
            "are unaffected.  To get it, install a C compiler and reinstall; set "
            f"{REQUIRE_ENV}=1 to make this failure an error."
        )


setup(
    ext_modules=[Extension("fastmlr._ckernels", ["fastmlr/_ckernels.pyx"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
