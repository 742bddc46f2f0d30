"""The worker pool shared by analysis and rendering."""
from __future__ import annotations

import os

from expertmix.workers import THREAD_VARS, WorkerPool, single_threaded_children, worker_pool


def _env(name: str) -> str | None:
    return os.environ.get(name)


def test_pool_starts_ahead_and_runs_jobs_in_other_processes():
    with WorkerPool(2) as pool:
        pool.warm()
        pool.warm()  # a second call does nothing
        pool._wait_warm()
        # warming starts every worker (none is started once jobs run: see WorkerPool.warm)
        assert len(pool._executor._processes) == 2
        pids = {pool.submit(os.getpid).result() for _ in range(4)}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        # workers run BLAS single-threaded unless the user chose otherwise
        if "OPENBLAS_NUM_THREADS" not in os.environ:
            assert pool.submit(_env, "OPENBLAS_NUM_THREADS").result() == "1"


def test_thread_variables_are_restored():
    before = {k: os.environ.get(k) for k in THREAD_VARS}
    with single_threaded_children():
        assert all(os.environ.get(k) for k in THREAD_VARS)
    assert {k: os.environ.get(k) for k in THREAD_VARS} == before


def test_a_given_pool_is_left_running():
    with WorkerPool(1) as pool:
        with worker_pool(2, pool) as same:
            assert same is pool
        assert pool.submit(abs, -3).result() == 3   # still usable


def test_map_ordered_keeps_order_and_raises_the_first_failure_in_order():
    import operator

    import pytest

    with WorkerPool(2) as pool:
        seen = []
        assert pool.map_ordered(divmod, [(7, 2), (9, 4), (1, 1)], on_done=lambda i, n: seen.append((i, n))) \
            == [(3, 1), (2, 1), (1, 0)]
        assert sorted(i for i, _ in seen) == [0, 1, 2] and sorted(n for _, n in seen) == [1, 2, 3]
        for _ in range(3):  # whichever fails first in time, the first in order is raised
            with pytest.raises(KeyError):  # not the IndexError of the later job
                pool.map_ordered(operator.getitem, [([1], 0), ({}, "k"), ([1], 5)] + [([2], 0)] * 4)


def test_map_ordered_submits_the_costliest_jobs_first_and_keeps_the_order_of_results_and_errors():
    import operator
    import time

    import pytest

    with WorkerPool(1) as pool:  # one worker runs the jobs in submission order
        stamps = pool.map_ordered(time.monotonic_ns, [(), (), (), ()], costs=[1.0, 3.0, 2.0, 3.0])
        assert stamps[1] < stamps[3] < stamps[2] < stamps[0]   # ties keep the job order
        with pytest.raises(KeyError):  # the costly IndexError job runs first; the first in order is raised
            pool.map_ordered(operator.getitem, [([1], 0), ({}, "k"), ([1], 5)], costs=[1.0, 1.0, 9.0])


def test_a_prestarted_pool_is_adopted_once_by_a_pool_of_its_size():
    from expertmix import workers

    workers.prestart(2)
    early = workers._PRESTARTED
    try:
        assert early is not None
        workers.prestart(2)  # a second call does nothing
        assert workers._PRESTARTED is early
        with workers.started_pool(2) as pool:
            assert pool is early and workers._PRESTARTED is None
            assert pool.submit(abs, -2).result() == 2
        with workers.started_pool(2) as other:  # the next one starts afresh
            assert other is not early
    finally:
        workers._shutdown_prestarted()


def test_workers_release_memory_between_jobs():
    """The malloc tuning is harmless where it applies and a no-op elsewhere; jobs still run."""
    import platform

    from expertmix import workers

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert workers._libc() is not None  # the tuning applies on these machines, not only a no-op
    workers._tune_malloc()
    workers._release_memory()
    assert workers._call(divmod, (7, 2), {}) == (3, 1)
    with WorkerPool(1) as pool:
        assert pool.submit(divmod, 9, 4).result() == (2, 1)
