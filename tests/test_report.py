"""The HTML report (fastmlr.report): valid HTML, every embedded image decodes."""

import base64
import io
import os
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import fastmlr
from fastmlr.synthetic import simulate_pool

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


from fastmlr.report import FIGURES, write_report  # noqa: E402

_VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collects image sources and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors, self.doctype = [], [], [], False

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _parse(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    chk = _Checker()
    chk.feed(text)
    chk.close()
    return chk


def _decode(src):
    head, _, data = src.partition(",")
    assert head == "data:image/png;base64"
    return imread(io.BytesIO(base64.b64decode(data, validate=True)), format="png")


@pytest.fixture(scope="module")
def pool():
    sim = simulate_pool(k=3, d=5, n_tasks=500, seed=2)
    tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    return sim, tasks


def test_report_is_valid_html_with_every_figure(pool, tmp_path):
    sim, tasks = pool
    model = fastmlr.fit(tasks, k=None)  # k chosen: the criterion figure too
    assert "k_selection" in model.diagnostics
    out = tmp_path / "report.html"
    names = write_report(out, model, tasks, png_dir=tmp_path / "png", truth=sim)
    assert names == list(FIGURES)
    chk = _parse(out)
    assert chk.doctype and not chk.errors and chk.stack == []
    assert [img["alt"] for img in chk.images] == names
    for img, name in zip(chk.images, names):
        a = _decode(img["src"])
        b = imread(tmp_path / "png" / f"{name}.png")
        assert a.ndim == 3 and a.shape[0] > 100 and a.shape[1] > 100
        np.testing.assert_array_equal(a, b)  # the PNG files are the embedded figures
        assert a.std() > 0  # something is drawn
    assert sorted(os.listdir(tmp_path / "png")) == sorted(f"{n}.png" for n in names)


def test_report_without_truth_or_choice_of_k(pool, tmp_path):
    _, tasks = pool
    model = fastmlr.fit(tasks, k=3)
    out = tmp_path / "r.html"
    names = write_report(out, model, tasks)
    assert names == ["weights_noise", "certainty", "loglik"]
    chk = _parse(out)
    assert not chk.errors and len(chk.images) == 3
    for img in chk.images:
        assert _decode(img["src"]).size > 0
    assert not (tmp_path / "png").exists()


def test_report_names_missing_matplotlib(pool, tmp_path, monkeypatch):
    _, tasks = pool
    model = fastmlr.fit(tasks, k=3)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fastmlr\[plot\]"):
        write_report(tmp_path / "r.html", model, tasks)
    assert not (tmp_path / "r.html").exists()


def test_report_refuses_truth_of_wrong_shape(pool, tmp_path):
    _, tasks = pool
    model = fastmlr.fit(tasks, k=3)
    with pytest.raises(ValueError, match="truth W"):
        write_report(tmp_path / "r.html", model, tasks, truth=np.zeros((3, 4)))
    assert not (tmp_path / "r.html").exists()


def test_cli_report_and_predict_interval(tmp_path, capsys):
    import csv

    from fastmlr.cli import main

    pool, model = str(tmp_path / "pool.npz"), str(tmp_path / "model.npz")
    assert main(["simulate", "--k", "3", "--d", "5", "--tasks", "600", "--queries", "2", "-o", pool]) == 0
    assert main(["fit", pool, "--k", "3", "-o", model, "--skip-query-rows"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", model, pool, "-o", str(out), "--png", str(tmp_path / "figs")]) == 0
    chk = _parse(out)
    assert not chk.errors and len(chk.images) == 4  # the pool holds the truth: coefficients drawn
    for img in chk.images:
        assert _decode(img["src"]).size > 0
    assert len(os.listdir(tmp_path / "figs")) == 4
    # predictive intervals of the query rows
    assert main(["predict", model, pool, "-o", str(tmp_path / "out.csv"), "--interval", "0.9"]) == 0
    with open(tmp_path / "out.queries.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["row", "task", "yhat_bayes", "yhat_map", "lo", "hi"] and len(rows) == 1200
    lo, yhat, hi = (np.array([float(r[c]) for r in rows]) for c in ("lo", "yhat_bayes", "hi"))
    assert np.all(lo < yhat) and np.all(yhat < hi)
    assert main(["predict", model, pool, "-o", str(tmp_path / "o.npz"), "--interval", "0.9"]) == 0
    z = np.load(tmp_path / "o.npz")
    np.testing.assert_allclose(z["lo"], lo, rtol=1e-8)
    np.testing.assert_allclose(z["hi"], hi, rtol=1e-8)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # an argument error: argparse exits with status 2
        main(["predict", model, pool, "-o", str(tmp_path / "x.csv"), "--interval", "1"])
    assert exc.value.code == 2 and "strictly between 0 and 1" in capsys.readouterr().err
    assert main(["report", model, pool, "-o", str(tmp_path / "r.txt")]) == 2
    assert "html" in capsys.readouterr().err


def test_cli_report_names_missing_matplotlib(pool, tmp_path, monkeypatch, capsys):
    from fastmlr.cli import main

    sim, tasks = pool
    model = str(tmp_path / "m.npz")
    fastmlr.save_model(model, fastmlr.fit(tasks, k=3))
    np.savez(tmp_path / "p.npz", X=sim["X"], y=sim["y"], task=sim["task"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["report", model, str(tmp_path / "p.npz"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fastmlr[plot]" in err
    assert not (tmp_path / "r.html").exists()
