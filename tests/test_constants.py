"""The tuning constants of the Numba and Cython kernels agree.

Both kernel modules define the same blocking constants (task blocks, row slabs,
summation lanes, the linkage scan); the same bits at any thread count need the same
values.  The Cython ones are compile-time (``cdef enum``), so they are read from the
``.pyx`` source; the Numba ones are module attributes.
"""

import ast
import pathlib
import re

import pytest

import fastmlr

# the source of the Cython kernels: beside the package in a development install, else in
# the checkout these tests belong to (an installed wheel carries only the compiled module)
PYX = next((p for p in (pathlib.Path(fastmlr.__file__).with_name("_ckernels.pyx"),
                        pathlib.Path(__file__).resolve().parents[1] / "fastmlr" / "_ckernels.pyx") if p.exists()),
           pathlib.Path(__file__).resolve().parents[1] / "fastmlr" / "_ckernels.pyx")
NUMBA_SOURCE = pathlib.Path(fastmlr.__file__).with_name("kernels.py")


def cython_constants() -> dict:
    """Names and integer values of the ``cdef enum`` block and the typed integer
    constants (``cdef int64_t NAME = value``) at the top level of the ``.pyx``."""
    text = PYX.read_text()
    out = {}
    enum = re.search(r"^cdef enum:\n((?:[ \t]+.*\n|\n)+)", text, re.M)
    assert enum, "no cdef enum block in _ckernels.pyx"
    for line in enum.group(1).splitlines():
        m = re.match(r"\s+(_?[A-Z][A-Z0-9_]*)\s*=\s*([0-9xXa-fA-F]+)", line)
        if m:
            out[m.group(1)] = int(m.group(2), 0)
    for m in re.finditer(r"^cdef\s+(?:int64_t|int|Py_ssize_t|long)\s+(_?[A-Z][A-Z0-9_]*)\s*=\s*([0-9xXa-fA-F]+)",
                         text, re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


def numba_constants() -> dict:
    """Names of the integer constants assigned at the top level of ``kernels.py``,
    with their values as the imported module holds them."""
    tree = ast.parse(NUMBA_SOURCE.read_text())
    names = [t.id for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", t.id)]
    pytest.importorskip("numba")
    from fastmlr import kernels

    return {n: int(getattr(kernels, n)) for n in names
            if isinstance(getattr(kernels, n), (int,)) or type(getattr(kernels, n)).__name__.startswith("int")}


def test_both_kernel_modules_define_tuning_constants():
    c, n = cython_constants(), numba_constants()
    assert {"_TASK_BLOCK", "_ROW_SLAB", "_LANES", "_SCAN_BLOCK", "_GATHER_RATIO", "_KEY_MASK"} <= set(c)
    assert {"_TASK_BLOCK", "_ROW_SLAB", "_LANES", "_SCAN_BLOCK", "_GATHER_RATIO", "_KEY_MASK"} <= set(n)


def test_tuning_constants_of_numba_and_cython_kernels_agree():
    c, n = cython_constants(), numba_constants()
    shared = sorted(set(c) & set(n))
    assert [(name, n[name]) for name in shared] == [(name, c[name]) for name in shared]
    # every integer constant of one module is in the other
    assert set(c) == set(n), f"only in _ckernels.pyx: {set(c) - set(n)}; only in kernels.py: {set(n) - set(c)}"
