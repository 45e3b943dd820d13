"""Shared machinery of the paper's experiments: results, CSV files, figures, tables.

Every experiment module exposes ``run(*, quick, trials, seed, progress) -> Result`` and
``plot(result, fig)``.  :func:`write_outputs` turns a :class:`Result` into files: one
CSV per table and, when matplotlib is installed, one PNG.  Files are written under a
temporary name in the output directory and renamed into place, all of one result
together, so a reader never sees half a file or files of two runs side by side, and an
interrupted run leaves the previous output intact.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .._atomic import atomic_files, atomic_open

__all__ = ["Result", "Table", "write_csv", "write_outputs", "format_table", "loglog_slope",
           "PLOT_HINT", "say", "trial_seeds"]

PLOT_HINT = 'figure skipped: matplotlib is not installed (pip install "fastmlr[plot]")'


@dataclass
class Table:
    """Rows of numbers with named columns; ``rows`` is a list of dicts keyed by ``columns``."""

    columns: list
    rows: list


@dataclass
class Result:
    """What an experiment measured.

    Attributes
    ----------
    name : str -- the experiment (also the stem of its output files)
    tables : dict[str, Table] -- ``""`` is the main table (``NAME.csv``); any other key
        ``K`` is written to ``NAME_K.csv``
    summary : list[str] -- the short plain-text table printed at the end of a run
    numbers : dict -- the key numbers (slopes, ratios, ...) the README quotes
    setting : dict -- sizes, seeds and trial counts, for the record
    extra : dict -- anything else the figure draws (not written to CSV)
    """

    name: str
    tables: dict
    summary: list
    numbers: dict = field(default_factory=dict)
    setting: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def say(progress, msg: str) -> None:
    """Send ``msg`` to the progress callable, if there is one."""
    if progress is not None:
        progress(msg)


def trial_seeds(seed: int, n: int):
    """``n`` independent SeedSequences spawned from one integer seed."""
    return np.random.SeedSequence(seed).spawn(n)


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def write_csv(path: str, table: Table) -> str:
    """Write ``table`` to ``path`` as CSV (temporary name, then rename); return ``path``."""
    with atomic_open(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=table.columns, extrasaction="raise", lineterminator="\n")
        w.writeheader()
        for row in table.rows:
            w.writerow({c: _cell(row.get(c)) for c in table.columns})
    return path


def _cell(v):
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "" if math.isnan(v) else repr(round(v, 6)) if abs(v) >= 1e-3 or v == 0 else f"{v:.6g}"
    if isinstance(v, np.integer):
        return int(v)
    return "" if v is None else v


def _matplotlib():
    """``(Figure, FigureCanvasAgg)``; raises ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def write_figure(path: str, plot, result: Result) -> str | None:
    """Draw ``plot(result, fig)`` and save it as PNG at ``path``; None without matplotlib.

    The figure is built on an ``Agg`` canvas directly, so no global pyplot state (or
    display) is touched.
    """
    try:
        Figure, FigureCanvasAgg = _matplotlib()
    except ImportError:
        return None
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    plot(result, fig)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return path


def write_outputs(result: Result, plot, out: str, *, figure: bool = True) -> list:
    """Write the CSV files (and the PNG when possible) of ``result`` into directory ``out``.

    Returns
    -------
    list of str -- lines naming every file written, and the hint when the figure was skipped
    """
    os.makedirs(out, exist_ok=True)
    lines = []
    with atomic_files():  # the files of one result appear together or not at all
        for key, table in result.tables.items():
            stem = result.name if not key else f"{result.name}_{key}"
            lines.append("wrote " + write_csv(os.path.join(out, stem + ".csv"), table))
        if figure:
            png = write_figure(os.path.join(out, result.name + ".png"), plot, result)
            lines.append("wrote " + png if png else PLOT_HINT)
    return lines


def format_table(columns, rows, formats=None) -> list:
    """A small fixed-width text table: a header line, then one line per row.

    ``formats`` maps a column to a format spec (default: ``.4g`` for floats).
    """
    formats = formats or {}
    cells = []
    for row in rows:
        line = []
        for c in columns:
            v = row.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                line.append("-")
            elif isinstance(v, (float, np.floating)):
                line.append(format(float(v), formats.get(c, ".4g")))
            else:
                line.append(str(v))
        cells.append(line)
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(str(c).rjust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return out
