"""The paper's experiments, one module each, run by ``fastmlr reproduce NAME``.

========================  ==========================================================
``prediction``            Figure 2: MAP and Bayes errors against tau
``clustering``            Figure 3 and Table 3: t_min of the clustering against k
``subspace``              Lemma 5.1: the subspace error against n * t
``classification``        Section 5.3 / Remark 4.6: examples per task to classify
``sine``                  the few-shot sinusoid benchmark with Chebyshev features
========================  ==========================================================

Every module has ``run(*, quick, trials, seed, progress) -> Result`` and
``plot(result, fig)``; :func:`run_experiment` runs one and writes its files.
"""

from __future__ import annotations

import importlib
import os

from .._validation import check_int
from .runner import Result, write_outputs

__all__ = ["EXPERIMENTS", "run_experiment", "Result"]

EXPERIMENTS = ("prediction", "clustering", "subspace", "classification", "sine")


def run_experiment(name, out, *, quick=False, trials=None, seed=0, progress=None, figure=True):
    """Run experiment ``name`` and write its CSV files (and PNG) into directory ``out``.

    Parameters
    ----------
    name : str -- one of :data:`EXPERIMENTS`
    out : str -- output directory (created if missing)
    quick : bool -- the small version (under a minute on 2 cores)
    trials : int or None -- trials per point (None: the experiment's default)
    seed : int >= 0
    progress : callable(str) or None
    figure : bool -- draw the PNG when matplotlib is available

    Returns
    -------
    (Result, list of str) -- the measurements and the lines saying what was written
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment is {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    if trials is not None:
        trials = check_int(trials, "trials", low=1)
    seed = check_int(seed, "seed", low=0)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out is {out!r}, which is a file; expected a directory")
    os.makedirs(out, exist_ok=True)  # before the run, so a bad path fails at once
    mod = importlib.import_module(f"{__name__}.{name}")
    result = mod.run(quick=quick, trials=trials, seed=seed, progress=progress)
    return result, write_outputs(result, mod.plot, out, figure=figure)
