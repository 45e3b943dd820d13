"""A report to look at: one self-contained HTML file with the fit's figures.

:func:`write_report` draws, with matplotlib (the optional extra ``plot``):

* ``k_selection`` -- the information criterion over k, when ``fit`` chose k;
* ``weights_noise`` -- the weights p and noise levels s2 of the components with 95%
  intervals (:func:`fastmlr.inference.standard_errors`);
* ``certainty`` -- the posterior certainty of the pool's tasks (largest posterior
  weight) against their size: how many rows a task needs before its component is known;
* ``loglik`` -- the log-likelihood per row over the EM iterations;
* ``coefficients`` -- estimated against true coefficients with 95% intervals, when the
  truth is given (a simulated pool).

Each figure is embedded as a base64 PNG, so the file needs nothing beside it; with
``png_dir`` the same figures are also written there as PNG files.
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

__all__ = ["write_report", "report_figures", "FIGURES"]

FIGURES = ("k_selection", "weights_noise", "certainty", "loglik", "coefficients")

_Z95 = 1.959963984540054


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the report draws its figures with matplotlib, which is not installed; "
                          "install it with: pip install 'fastmlr[plot]' (or pip install matplotlib)") from None
    return Figure


def _truth_arrays(truth, k, d):
    """(W, s2 or None, p or None) of the true mixture."""
    if truth is None:
        return None, None, None
    s2 = p = None
    if isinstance(truth, dict):
        W, s2, p = truth.get("W"), truth.get("s2"), truth.get("p")
    elif hasattr(truth, "W") and hasattr(truth, "s2"):
        W, s2, p = truth.W, truth.s2, getattr(truth, "p", None)
    elif isinstance(truth, (tuple, list)) and len(truth) == 3 and np.ndim(truth[0]) == 2:
        W, s2, p = truth
    else:
        W = truth
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != d or not 1 <= W.shape[0] <= k:
        raise ValueError(f"truth W has shape {W.shape}; expected (k', {d}) with 1 <= k' <= {k} (the true W, "
                         f"or a mixture or dict with W, s2 and p)")
    s2 = None if s2 is None else np.asarray(s2, dtype=np.float64)
    p = None if p is None else np.asarray(p, dtype=np.float64)
    return W, s2, p


def report_figures(model, tasks, *, truth=None, se=None):
    """The report's figures as matplotlib Figures.

    Parameters
    ----------
    model : Model -- from :func:`fastmlr.fit`
    tasks : (X, y, offsets) -- the pool it was fitted to
    truth : optional -- the true parameters of a simulated pool: W (k, d), or a mixture
        (``W``, ``s2``, ``p``: a :func:`fastmlr.make_mixture` result, a ``(W, s2, p)``
        tuple or a dict such as :func:`fastmlr.synthetic.simulate_pool` returns)
    se : StandardErrors, optional -- computed with
        :func:`fastmlr.inference.standard_errors` when not given

    Returns
    -------
    dict of name -> (matplotlib.figure.Figure, caption str), in the order of
    :data:`FIGURES` (``k_selection`` only when k was chosen, ``coefficients`` only with
    ``truth``)
    """
    Figure = _matplotlib()
    from .inference import _model_params, _task_set, standard_errors
    from .metrics import match_components
    from .predict import posterior

    W, s2, p = _model_params(model)
    k, d = W.shape
    diag = getattr(model, "diagnostics", None) or {}
    ts = _task_set(tasks)
    if se is None:
        se = standard_errors(ts, model)
    tW, ts2, tp = _truth_arrays(truth, k, d)
    perm = match_components(W, tW) if tW is not None else None
    figs = {}

    sel = diag.get("k_selection")
    if sel and sel.get("candidates"):
        rows = sorted(sel["candidates"], key=lambda r: r["k"])
        ks = np.array([r["k"] for r in rows])
        bic = np.array([r["bic"] for r in rows])
        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.add_subplot()
        ax.plot(ks, bic, "o-", color="C0")
        ch = int(sel.get("chosen", ks[np.argmin(bic)]))
        ax.plot([ch], bic[ks == ch], "o", ms=12, mfc="none", mec="C3", mew=2, label=f"chosen k = {ch}")
        ax.set_xlabel("k")
        ax.set_ylabel("BIC")
        ax.set_xticks(ks)
        ax.legend()
        ax.set_title("Criterion over k")
        fig.tight_layout()
        figs["k_selection"] = (fig, f"BIC over the candidate k (the spectrum proposed k = {sel.get('k_spectrum')}); "
                                    f"the smallest is chosen.")

    fig = Figure(figsize=(8, 3.6))
    comp = np.arange(k)
    for j, (name, est, err, tv) in enumerate((("weight p", p, se.p, tp), ("noise variance s2", s2, se.s2, ts2))):
        ax = fig.add_subplot(1, 2, j + 1)
        ax.errorbar(comp, est, yerr=_Z95 * err, fmt="o", color="C0", capsize=3, label="estimate, 95% interval")
        if tv is not None and perm is not None and tv.shape == (tW.shape[0],):
            ax.plot(perm, tv, "x", color="C3", ms=8, label="truth")
        ax.set_xlabel("component")
        ax.set_xticks(comp)
        ax.set_title(name)
        if j == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    figs["weights_noise"] = (fig, "Weights and noise variances of the components with 95% intervals "
                                  f"(standard errors: {se.method}).")

    post = posterior(ts, W, s2, p)
    sizes = np.diff(ts.offsets)
    cert = post.max(axis=1)
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    show = rng.permutation(sizes.size)[:4000]
    ax.scatter(sizes[show] + rng.uniform(-0.3, 0.3, show.size), cert[show], s=4, alpha=0.25, color="C0",
               label="a task")
    us = np.unique(sizes)
    ax.plot(us, [cert[sizes == u].mean() for u in us], "-", color="C1", lw=2, label="mean")
    ax.plot(us, [(cert[sizes == u] > 0.95).mean() for u in us], "--", color="C3", lw=2,
            label="share above 0.95")
    ax.set_xlabel("rows of the task")
    ax.set_ylabel("largest posterior weight")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("How sure is each task's component?")
    fig.tight_layout()
    figs["certainty"] = (fig, "Posterior certainty of the pool's tasks against their size (1/k = "
                              f"{1 / k:.2f} is no information).")

    hist = diag.get("loglik_history")
    if hist:
        h = np.asarray(hist, dtype=np.float64)
        N = max(int(ts.offsets[-1]), 1)
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(8, 3.4))
        ax = fig.add_subplot(1, 2, 1)
        ax.plot(np.arange(h.size), h / N, "o-", ms=3)
        ax.set_xlabel("EM iteration")
        ax.set_ylabel("log-likelihood per row")
        ax2 = fig.add_subplot(1, 2, 2)
        gain = np.diff(h) / N
        if gain.size and np.any(gain > 0):
            ax2.semilogy(np.arange(1, h.size)[gain > 0], gain[gain > 0], "o-", ms=3, color="C2")
        ax2.set_xlabel("EM iteration")
        ax2.set_ylabel("gain per row")
        for a in (ax, ax2):
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        figs["loglik"] = (fig, f"Log-likelihood over {h.size - 1} EM iterations, and its gain per iteration.")

    if tW is not None:
        fig = Figure(figsize=(5, 4.6))
        ax = fig.add_subplot()
        est, err = W[perm], se.W[perm]
        for l in range(tW.shape[0]):
            ax.errorbar(tW[l], est[l], yerr=_Z95 * err[l], fmt="o", ms=3, capsize=2, color=f"C{l % 10}", alpha=0.8)
        lim = [min(tW.min(), est.min()) - 0.1, max(tW.max(), est.max()) + 0.1]
        ax.plot(lim, lim, "-", color="0.5", lw=1)
        ax.set_xlabel("true coefficient")
        ax.set_ylabel("estimate (95% interval)")
        ax.set_title("Estimated against true coefficients")
        fig.tight_layout()
        cover = float(np.mean(np.abs(est - tW) <= _Z95 * err))
        figs["coefficients"] = (fig, f"Coefficients of the matched components, one colour per component; "
                                     f"{100 * cover:.0f}% of the 95% intervals cover the truth.")
    return {name: figs[name] for name in FIGURES if name in figs}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _table(head, rows):
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(path, model, tasks, *, png_dir=None, truth=None, se=None, title="fastmlr fit report"):
    """Write one self-contained HTML report of a fitted mixture (figures embedded).

    Parameters
    ----------
    path : str or os.PathLike -- the HTML file (replaced whole or not at all)
    model : Model -- from :func:`fastmlr.fit`: ``W`` (k, d), ``s2`` (k,), ``p`` (k,)
    tasks : (X, y, offsets) -- the pool it was fitted to
    png_dir : str or os.PathLike, optional -- also write every figure there as
        ``NAME.png`` (the directory is created if missing)
    truth : optional -- true parameters of a simulated pool, for the estimated-against-
        true figure: W (k, d), or a mixture with ``W``, ``s2``, ``p`` (see
        :func:`report_figures`)
    se : StandardErrors, optional -- computed (Louis) when not given
    title : str

    Returns
    -------
    list of str -- the names of the figures drawn (see :data:`FIGURES`)

    Raises
    ------
    ImportError
        matplotlib is not installed.

    Examples
    --------
    >>> import os, tempfile, fastmlr
    >>> from fastmlr.report import write_report
    >>> from fastmlr.synthetic import simulate_pool
    >>> sim = simulate_pool(k=2, d=3, n_tasks=300, seed=0)
    >>> tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    >>> model = fastmlr.fit(tasks, k=2)
    >>> out = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> write_report(out, model, tasks, truth=sim["W"])
    ['weights_noise', 'certainty', 'loglik', 'coefficients']
    """
    from ._atomic import atomic_files, atomic_open
    from .inference import _model_params, _task_set, standard_errors

    _matplotlib()
    W, s2, p = _model_params(model)
    k, d = W.shape
    ts = _task_set(tasks)
    if se is None:
        se = standard_errors(ts, model)
    figs = report_figures(model, ts, truth=truth, se=se)
    pngs = {name: _png(fig) for name, (fig, _) in figs.items()}
    diag = getattr(model, "diagnostics", None) or {}
    sizes = np.diff(ts.offsets)
    summary = [("components k", k), ("features d", d), ("tasks", f"{int((sizes > 0).sum()):,}"),
               ("rows", f"{int(sizes.sum()):,}"), ("task sizes", f"{int(sizes.min())}-{int(sizes.max())}")]
    if "loglik" in diag:
        summary.append(("log-likelihood", f"{diag['loglik']:.6g}"))
    if "converged" in diag:
        summary.append(("EM converged", "yes" if diag["converged"] else "no"))
    if diag.get("k_selection"):
        summary.append(("k chosen by", diag["k_selection"].get("method", "BIC")))
    params = [(l, f"{p[l]:.4f}", f"{_Z95 * se.p[l]:.4f}", f"{s2[l]:.4g}", f"{_Z95 * se.s2[l]:.3g}",
               f"{np.linalg.norm(W[l]):.4g}", f"{se.W[l].max():.3g}") for l in range(k)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "text-align:right}figure{margin:1.5em 0}img{max-width:100%}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Pool and fit</h2>",
        _table(("", ""), summary),
        "<h2>Components</h2>",
        _table(("component", "p", "± 95%", "s2", "± 95%", "|w|", f"largest SE of w ({se.method})"), params),
    ]
    for name, (_, caption) in figs.items():
        b64 = base64.b64encode(pngs[name]).decode("ascii")
        parts += [f'<figure id="{name}">',
                  f'<img src="data:image/png;base64,{b64}" alt="{html.escape(name)}">',
                  f"<figcaption>{html.escape(caption)}</figcaption>",
                  "</figure>"]
    parts += ["</body>", "</html>", ""]
    text = "\n".join(parts)
    with atomic_files():
        with atomic_open(path, "w") as fh:
            fh.write(text)
        if png_dir is not None:
            os.makedirs(png_dir, exist_ok=True)
            for name, data in pngs.items():
                with atomic_open(os.path.join(png_dir, f"{name}.png"), "wb") as fh:
                    fh.write(data)
    return list(figs)
