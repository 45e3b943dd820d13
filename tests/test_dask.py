"""fastmlr.dask on a LocalCluster: fit, meta_learn and predict equal the in-memory calls,
a worker killed during fit is survived, tasks straddling partitions are refused."""

import os
import signal
import subprocess
import sys

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import fastmlr
import fastmlr.dask
from fastmlr.tasks import TaskSet, TaskStream

K, D = 3, 6
FEATURES = [f"x{j}" for j in range(D)]


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster) as c:
        yield c


def _frame(seed=0, n=1200, dtype="float64", queries=False, k=K):
    """A pool as one frame sorted by task id: light tasks of 4 rows, every 10th of 24."""
    W, s2, p = fastmlr.make_mixture(k, D, seed=seed)
    sizes = np.full(n, 4)
    sizes[::10] = 24
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=seed + 1, dtype=dtype)
    df = pd.DataFrame(S.X, columns=FEATURES)
    df["y"] = S.y
    df["task"] = np.repeat(np.arange(n) * 3 + 5, sizes)  # ids neither positions nor contiguous
    if queries:  # the last row of every 5th task is a query row
        last = np.cumsum(sizes) - 1
        df.loc[last[::5], "y"] = np.nan
    return W, df


def _split(df, cuts):
    """Frames of the tasks between the given task positions (a cut repeated: an empty frame)."""
    ids = np.unique(df["task"])
    bounds = np.concatenate([[0], cuts, [ids.size]]).astype(np.int64)
    return [df[df["task"].isin(ids[a:b])] for a, b in zip(bounds[:-1], bounds[1:])]


def _ddf(parts):
    return dd.from_delayed([dask.delayed(p) for p in parts], meta=parts[0].iloc[:0], verify_meta=False)


def _parquet_files(directory, parts):
    """The partitions written as Parquet files, one per partition, in order."""
    for i, part in enumerate(parts):
        part.to_parquet(directory / f"part-{i}.parquet", index=False)


def _concat_pool(parts):
    """The in-memory pool of the partitions in partition order (each sorted by id)."""
    pools = [fastmlr.tasks_from_frame(p) for p in parts if len(p)]
    X = np.concatenate([q.X for q in pools])
    y = np.concatenate([q.y for q in pools])
    sizes = np.concatenate([np.diff(q.offsets) for q in pools])
    return TaskSet(X, y, np.concatenate([[0], np.cumsum(sizes)]))


def _stream(parts):
    """The partitions as an in-memory TaskStream, one chunk each."""
    pools = [fastmlr.tasks_from_frame(p) for p in parts if len(p)]
    return TaskStream(lambda: iter([(q.X, q.y, q.offsets) for q in pools]))


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


def _same_fit(got, ref, pool):
    assert _rel(got.W, ref.W) <= 1e-10
    assert _rel(got.s2, ref.s2) <= 1e-10
    assert _rel(got.p, ref.p) <= 1e-10
    assert got.diagnostics["em_iterations"] == ref.diagnostics["em_iterations"]
    lab = np.argmax(fastmlr.posterior(pool, got.W, got.s2, got.p), axis=1)
    assert np.array_equal(lab, np.argmax(fastmlr.posterior(pool, ref.W, ref.s2, ref.p), axis=1))


LAYOUTS = {
    "uneven": [37, 40, 700],  # partitions of 37, 3, 660 and 500 tasks
    "one": [],
    "empty": [0, 300, 300, 1200],  # empty first, middle and last partitions
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_equals_in_memory(client, layout, dtype):
    """float64: equal to the fit of the whole pool in one array.  float32: the products
    of X are rounded in float32 block by block, and blocks start at every chunk, so
    the equal in-memory call is the fit of the same chunks (a TaskStream of the
    partitions); the one-array fit differs by float32 rounding."""
    W, df = _frame(dtype=dtype, queries=layout == "empty")
    parts = _split(df, LAYOUTS[layout])
    pool = fastmlr.tasks_from_frame(df)
    whole = fastmlr.fit(pool, K, em_path="passes")
    got = fastmlr.dask.fit(_ddf(parts), K)
    assert got.W.dtype == np.float64 and pool.X.dtype == np.dtype(dtype)
    if dtype == "float64":
        _same_fit(got, whole, pool)
    else:
        _same_fit(got, fastmlr.fit(_stream(parts), K), pool)
        assert _rel(got.W, whole.W) <= 1e-5
    assert fastmlr.parameter_error(got.W, W).max < 0.2


def test_fit_does_not_gather_the_responsibilities(client, monkeypatch):
    """The (n, k) responsibilities never travel to the client: the moves after EM use
    the weighted rows per component that the E-pass sums (k = 3 runs them)."""
    def refuse(self):
        raise AssertionError("the responsibilities were fetched to the client")

    monkeypatch.setattr(fastmlr.dask._DaskPasses, "resp", refuse)
    _, df = _frame(seed=2)
    pool = fastmlr.tasks_from_frame(df)
    got = fastmlr.dask.fit(_ddf(_split(df, [400, 800])), K)
    _same_fit(got, fastmlr.fit(pool, K, em_path="passes"), pool)
    assert "split_moves" in got.diagnostics


def test_line_search_and_responsibilities_equal_in_memory(client):
    """The rare paths of EM in passes: with a preconditioner three times too large every
    step overshoots and is taken again by exact line search (a curvature pass, which
    computes the partitions' responsibilities at the kept point again), and ``resp=True``
    gathers the responsibilities; both equal the passes over the pool in memory."""
    from fastmlr import em as _em
    from fastmlr.em_passes import array_pool, run_gem

    _, df = _frame(seed=5)
    parts = _split(df, [0, 300, 700])
    pool = _concat_pool(parts)
    start = fastmlr.fit(pool, K, max_iter=1)
    S3 = 3.0 * np.linalg.inv(pool.X.T @ pool.X / pool.X.shape[0])
    opts = dict(floor=_em.s2_floor(pool), tol=0.0, max_iter=4, accelerate=False)
    lines = []
    ref = run_gem(array_pool(pool), start.W, start.s2, start.p, S3, **opts)
    got = run_gem(fastmlr.dask._scan(_ddf(parts)).pool(), start.W, start.s2, start.p, S3, progress=lines.append,
                  **opts)
    assert sum("line search" in line for line in lines) >= 3
    for a, b in ((got.W, ref.W), (got.s2, ref.s2), (got.p, ref.p), (got.loglik, ref.loglik), (got.rows, ref.rows)):
        assert _rel(a, b) <= 1e-10
    assert got.resp.shape == ref.resp.shape == (pool.offsets.size - 1, K)
    assert np.abs(got.resp - ref.resp).max() <= 1e-10



def test_a_pass_is_one_task_per_worker(client):
    """Seven persisted partitions on two workers: an E-pass runs one task on each worker
    (over the partitions it holds, where they lie), and its statistic equals the sum of
    every partition's own, added in the tree of fixed shape."""
    from distributed import get_task_stream

    from fastmlr.em_passes import e_chunk, pass_stats

    _, df = _frame(seed=3, n=1400)
    parts = _split(df, [200, 400, 600, 800, 1000, 1200])
    scan = fastmlr.dask._scan(_ddf(parts))
    holders = [h[0] for h in fastmlr.dask._placement(scan.parts)[0]]
    assert len(scan.parts) == 7 and len(set(holders)) == 2
    W, s2, p = fastmlr.make_mixture(K, D, seed=1)
    with get_task_stream(client) as stream:
        got = scan.pool().passes(K).e_pass(W, s2, p)
    ran = [t for t in stream.data if "_on_group" in str(t["key"])]
    assert len(ran) == 2
    assert {t["worker"] for t in ran} == set(holders)
    terms = [e_chunk(TaskSet(*fastmlr.tasks_from_frame(part)[:3]), W, s2, p)[0] for part in parts]
    ref = pass_stats(fastmlr.dask._local_sum(terms), K, D)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)

def test_parquet_partitions_are_read_without_a_consolidated_copy(client, tmp_path):
    """A frame of read_parquet with no arrow_to_pandas options is read with every column
    its own block (a view of Arrow's buffer, no copy into one block): the same values,
    so the same model as the frame read by Dask's defaults, computed in one process."""
    _, df = _frame(seed=3)
    _parquet_files(tmp_path, _split(df, [400, 800]))
    ddf = dd.read_parquet(tmp_path)
    lean = fastmlr.dask._lean_parquet(ddf)
    first = lean.partitions[0].compute()
    assert first._mgr.nblocks == len(first.columns) > 2
    assert ddf.partitions[0].compute()._mgr.nblocks == 2  # Dask's default: int ids, one float block
    pd.testing.assert_frame_equal(lean.compute(), ddf.compute())
    pool = fastmlr.tasks_from_frame(ddf.compute())
    _same_fit(fastmlr.dask.fit(ddf, K), fastmlr.fit(pool, K, em_path="passes"), pool)
    # a projection of it too; options the caller gave, and other frames, are left as they are
    assert fastmlr.dask._lean_parquet(ddf[["task", "y", "x0"]]).partitions[0].compute()._mgr.nblocks == 3
    own = dd.read_parquet(tmp_path, arrow_to_pandas={"split_blocks": False}, open_file_options={"cache_type": "none"})
    assert fastmlr.dask._lean_parquet(own) is own
    consolidated = fastmlr.dask._lean_parquet(dd.read_parquet(tmp_path, arrow_to_pandas={"split_blocks": False}))
    assert consolidated.partitions[0].compute()._mgr.nblocks == 2
    other = _ddf(_split(df, [400]))
    assert fastmlr.dask._lean_parquet(other) is other


def test_local_parquet_files_are_read_mapped_and_remote_ones_as_given(client, tmp_path, monkeypatch):
    """Local files read through fsspec are memory-mapped (no copy of their bytes before
    Arrow decodes them), files of another file system are read as Dask reads them; the
    frames are equal either way."""
    import fsspec
    import pyarrow as pa

    _, df = _frame(seed=4)
    parts = _split(df, [500])
    _parquet_files(tmp_path, parts)
    mapped = []
    real = pa.memory_map
    monkeypatch.setattr(pa, "memory_map", lambda path, *a, **kw: mapped.append(path) or real(path, *a, **kw))
    ddf = dd.read_parquet(tmp_path)
    with dask.config.set(scheduler="sync"):  # in this process, where the calls are counted
        lean = fastmlr.dask._lean_parquet(ddf).compute()
        assert sorted(mapped) == sorted(str(tmp_path / f"part-{i}.parquet") for i in range(2))
        pd.testing.assert_frame_equal(lean, ddf.compute())
        mem = fsspec.filesystem("memory")
        for i, part in enumerate(parts):
            with mem.open(f"/fastmlr-lean/part-{i}.parquet", "wb") as f:
                part.to_parquet(f, index=False)
        try:
            remote = dd.read_parquet("memory://fastmlr-lean")
            mapped.clear()
            pd.testing.assert_frame_equal(fastmlr.dask._lean_parquet(remote).compute(), lean)
            assert mapped == []
        finally:
            mem.rm("/fastmlr-lean", recursive=True)


def test_fit_follows_partition_order_after_a_shuffle(client):
    """A hash shuffle (the fix the error names) puts tasks out of id order: the result is
    the in-memory fit of the partitions concatenated in partition order."""
    _, df = _frame(seed=4)
    ddf = _ddf(_split(df, [400, 800])).shuffle(on="task", npartitions=3)
    parts = [ddf.partitions[i].compute() for i in range(ddf.npartitions)]
    assert sum(len(p) > 0 for p in parts) >= 2
    pool = _concat_pool(parts)
    ref = fastmlr.fit(pool, K, em_path="passes")
    _same_fit(fastmlr.dask.fit(ddf, K), ref, pool)


def test_fit_with_task_index_and_k_chosen(client):
    _, df = _frame(seed=6, n=900)
    pool = fastmlr.tasks_from_frame(df)
    ref = fastmlr.fit(pool, None, em_path="passes", k_max=4)
    got = fastmlr.dask.fit(dd.from_pandas(df.set_index("task"), npartitions=3), None, k_max=4)
    assert got.diagnostics["k"] == ref.diagnostics["k"]
    _same_fit(got, ref, pool)


def test_partitions_are_grouped_by_holder_within_half_its_memory():
    """The groups of a pass: each worker's partitions in order, a partition on two
    workers given to the one with fewer bytes so far, a worker's groups cut at half its
    memory limit, a partition held nowhere alone."""
    groups = fastmlr.dask._groups
    a, b = "tcp://a:1", "tcp://b:1"
    assert groups([(a,), (b,), (a,), (b,)], [1, 1, 1, 1], {a: 0, b: 0}) == [(a, [0, 2]), (b, [1, 3])]
    assert groups([(a, b), (a, b), (a, b), (a,)], [5, 5, 5, 1], {a: 0, b: 0}) == [(a, [0, 2, 3]), (b, [1])]
    assert groups([(a,)] * 5, [3] * 5, {a: 13}) == [(a, [0, 1]), (a, [2, 3]), (a, [4])]
    assert groups([(a,), (), (a,)], [1, 1, 1], {a: 0}) == [(a, [0, 2]), (None, [1])]
    assert groups([(a,)], [9], {a: 4}) == [(a, [0])]  # larger than the cut: alone


def test_fit_reading_the_source_every_pass(client):
    _, df = _frame(seed=8, n=600)
    pool = fastmlr.tasks_from_frame(df)
    got = fastmlr.dask.fit(_ddf(_split(df, [250])), K, persist=False)
    _same_fit(got, fastmlr.fit(pool, K, em_path="passes"), pool)


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_fit_on_dasks_local_schedulers(scheduler):
    """Without a distributed Client: the same fit, the moves' tasks (k = 3 runs them)
    fetched by a thread of their own while EM runs."""
    _, df = _frame(seed=9, n=900)
    pool = fastmlr.tasks_from_frame(df)
    with dask.config.set(scheduler=scheduler):
        got = fastmlr.dask.fit(_ddf(_split(df, [300, 600])), K)
    _same_fit(got, fastmlr.fit(pool, K, em_path="passes"), pool)
    assert "split_moves" in got.diagnostics


def _light_heavy(seed=10, dtype="float64"):
    W, s2, p = fastmlr.make_mixture(K, D, seed=seed)

    def frame(t, n, s):
        S = fastmlr.sample_tasks(W, s2, p, t, n_tasks=n, seed=s, dtype=dtype)
        df = pd.DataFrame(S.X, columns=FEATURES)
        df["y"], df["task"] = S.y, np.repeat(np.arange(n), t)
        return df

    return W, frame(4, 3000, seed + 1), frame(32, 60, seed + 2), frame(12, 600, seed + 3)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_meta_learn_equals_in_memory(client, layout, dtype):
    W, light, heavy, light2 = _light_heavy(dtype=dtype)
    cuts = {"uneven": [7, 9, 1700], "one": [], "empty": [0, 1000, 1000, 3000]}[layout]
    parts = _split(light, cuts), _split(heavy, [20] if cuts else []), _split(light2, [c // 5 for c in cuts])
    whole = [fastmlr.tasks_from_frame(f) for f in (light, heavy, light2)]
    # float32: the same chunks (see test_fit_equals_in_memory)
    ref = fastmlr.meta_learn(*whole if dtype == "float64" else (_stream(parts[0]), whole[1], _stream(parts[2])), K)
    got = fastmlr.dask.meta_learn(*(_ddf(p) for p in parts), K)
    for name in ("W", "s2", "p", "U"):
        assert _rel(getattr(got, name), getattr(ref, name)) <= 1e-10, name
    assert np.array_equal(got.cluster.labels, ref.cluster.labels)
    assert np.array_equal(got.classify.labels, ref.classify.labels)
    assert fastmlr.parameter_error(got.W, W).max < 0.2


def test_predict_equals_in_memory(client):
    W, df = _frame(seed=12, n=500, queries=True)
    df.index = np.arange(len(df)) * 2 + 1  # labels that are not positions
    parts = _split(df, [0, 120, 333])
    pool = fastmlr.tasks_from_frame(df)
    model = fastmlr.fit(pool, K, em_path="passes")
    tasks = fastmlr.dask.predict(model, _ddf(parts)).compute()
    post = fastmlr.posterior(pool, model.W, model.s2, model.p)
    assert np.array_equal(tasks["task"].to_numpy(), pool.tasks)
    assert np.allclose(tasks[[f"post{l}" for l in range(K)]].to_numpy(), post, rtol=1e-12, atol=1e-300)
    assert np.array_equal(tasks["map_component"].to_numpy(), np.argmax(post, axis=1))
    bayes = fastmlr.predict_params(pool, model.W, model.s2, model.p)
    assert np.allclose(tasks[[f"bayes_{f}" for f in FEATURES]].to_numpy(), bayes, rtol=1e-12, atol=1e-14)
    queries = fastmlr.dask.predict(model, _ddf(parts), what="queries").compute()
    assert np.array_equal(queries.index.to_numpy(), df.index[df["y"].isna()].to_numpy())
    qx = df.loc[queries.index, FEATURES].to_numpy()
    assert np.allclose(queries["yhat_bayes"], np.einsum("qd,qd->q", qx, bayes[pool.query_task]), rtol=1e-12)
    comp = np.argmax(post, axis=1)[pool.query_task]
    assert np.allclose(queries["yhat_map"], np.einsum("qd,qd->q", qx, model.W[comp]), rtol=1e-12)
    assert queries["task"].tolist() == pool.tasks[pool.query_task].tolist()


def test_worker_killed_during_fit(client):
    _, df = _frame(seed=14, n=1500)
    ddf = _ddf(_split(df, [300, 600, 900, 1200]))
    undisturbed = fastmlr.dask.fit(ddf, K)
    pids = client.run(os.getpid)
    killed = []

    def progress(msg):  # between two EM passes, with the partitions persisted on both workers
        if msg.startswith("EM pass 2:") and not killed:
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
            killed.append(pids[sorted(pids)[0]])

    got = fastmlr.dask.fit(ddf, K, progress=progress)
    assert killed and killed[0] not in client.run(os.getpid).values()  # a worker died (and was replaced)
    np.testing.assert_array_equal(got.W, undisturbed.W)
    np.testing.assert_array_equal(got.s2, undisturbed.s2)
    assert got.diagnostics["loglik_history"] == undisturbed.diagnostics["loglik_history"]


def test_tasks_straddling_partitions_are_refused(client):
    _, df = _frame(seed=16, n=300)
    ddf = dd.from_pandas(df, npartitions=7, sort=False)  # cuts by rows, through tasks
    assert len(ddf.partitions[0].compute()) % 60  # (10 tasks are 60 rows)
    with pytest.raises(ValueError, match=r"has rows in partitions .* ddf.shuffle\(on='task'\)"):
        fastmlr.dask.fit(ddf, K)
    with pytest.raises(ValueError, match=r"has rows in partitions .* ddf.shuffle\(on='task'\)"):
        fastmlr.dask.predict(fastmlr.Model(np.eye(K, D), np.ones(K), np.full(K, 1 / K), np.eye(D), {}), ddf)
    _, light, heavy, light2 = _light_heavy()
    with pytest.raises(ValueError, match=r"light2: task .* light2.shuffle"):
        fastmlr.dask.meta_learn(_ddf([light]), _ddf([heavy]), dd.from_pandas(light2, npartitions=7, sort=False), K)
    # the fix in the message works
    assert fastmlr.dask.fit(ddf.shuffle(on="task"), K).W.shape == (K, D)


def test_bad_arguments(client):
    _, df = _frame(seed=18, n=100)
    with pytest.raises(TypeError, match="ddf is DataFrame; expected a dask.dataframe.DataFrame"):
        fastmlr.dask.fit(df, K)
    with pytest.raises(ValueError, match="no task column 'id'"):
        fastmlr.dask.fit(_ddf([df]), K, task="id")
    with pytest.raises(ValueError, match="no target column 'target'"):
        fastmlr.dask.fit(_ddf([df]), K, target="target")
    with pytest.raises(ValueError, match="em_path is 'stats'"):
        fastmlr.dask.fit(_ddf([df]), K, em_path="stats")
    with pytest.raises(ValueError, match="what is 'rows'"):
        fastmlr.dask.predict(fastmlr.Model(np.eye(K, D), np.ones(K), np.full(K, 1 / K), np.eye(D), {}),
                             _ddf([df]), what="rows")


def test_workers_run_the_callers_backend(client):
    """The kernel backend in force at the call is the workers' too (float32 results of
    the NumPy reference kernels differ from the compiled ones in the last bits)."""
    _, df = _frame(seed=20, n=300, dtype="float32")
    parts = _split(df, [100])
    for backend in ("numpy", "numba"):
        with fastmlr.use_backend(backend):
            got = fastmlr.dask.fit(_ddf(parts), K)
            ref = fastmlr.fit(_stream(parts), K)
        np.testing.assert_allclose(got.W, ref.W, rtol=1e-10, atol=0)


def test_kernel_threads_share_the_host(client):
    """Each worker's kernels get the host's cores divided by the threads of its workers."""
    plan = fastmlr.dask._thread_plan(dask)
    assert sum(plan.values()) == 2
    cores = len(os.sched_getaffinity(0))
    got = client.run(fastmlr.dask._kernel_threads, plan)
    assert sorted(got.values()) == [max(1, cores // 2)] * 2


def test_import_fastmlr_does_not_import_dask():
    code = ("import sys, fastmlr; bad = [m for m in ('dask', 'distributed', 'pandas') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
