"""The Examples of every docstring in the package, run against the installed fastmlr.

Collected here rather than by ``--doctest-modules`` on the source tree, which would
import ``fastmlr`` from the checkout (without its compiled extension) instead of the
installed package the rest of the suite checks.
"""

import doctest
import importlib
import pkgutil

import pytest

import fastmlr

MODULES = sorted(m.name for m in pkgutil.walk_packages(fastmlr.__path__, "fastmlr.") if not m.name.endswith("__main__"))


def test_modules_are_found():
    assert {"fastmlr.tasks", "fastmlr.fit", "fastmlr.cli.pool", "fastmlr.em_passes"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = [t for t in finder.find(module, name) if t.examples]
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
