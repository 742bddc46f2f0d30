"""Worker processes, shared by the analysis and the render of one session.

Starting worker processes costs about a second on the benchmark machines (a fresh interpreter
imports numpy, Essentia and pyo). A :class:`WorkerPool` starts its workers once, in the
background while the main process probes the stems and loads the rulebook, and both
:func:`expertmix.descriptors.load_and_describe` and :func:`expertmix.render.render_mix` submit
to it.

Workers start with forkserver (spawn where it does not exist), never plain fork: the parent may
hold threads (BLAS, pyo). The fork server imports the heavy modules once (:data:`PRELOAD`), so
each worker forks ready to work. BLAS and OpenMP run single-threaded in workers: the workers
already use every core, and idle BLAS threads spin.

Memory in workers (glibc only, see :func:`_tune_malloc`): arrays up to 32 MB are allocated from
the heap and kept there while a job runs, and the heap is given back to the system after each
job (:func:`_release_memory`). Left to its defaults, glibc maps and unmaps every temporary of a
few MB, and the kernel zeroes fresh pages each time: that was about a sixth of the analysis's
CPU time (measured on the benchmark session: system time 1.4 -> 0.8 s, peak RSS 247 -> 228 MB
per process for 16 stems).

This module imports no heavy library itself; scripts that start workers need the usual
``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence

#: Modules the fork server imports before forking workers (their heavy imports are shared).
PRELOAD = ["expertmix._preload"]

#: Worker processes for one session: the benchmark machines have 2 cores, and more workers
#: than cores only add memory.
DEFAULT_PROCESSES = max(1, min(2, os.cpu_count() or 1))

#: Thread-count variables set to 1 for worker processes (unless the user set them).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ENV_LOCK = threading.Lock()


def pool_context() -> multiprocessing.context.BaseContext:
    """forkserver with :data:`PRELOAD` where it exists, else spawn; never plain fork."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Set the BLAS/OpenMP thread counts to 1 while worker processes start (they inherit the
    environment then: the fork server, or each spawned worker); restore them afterwards."""
    with _ENV_LOCK:
        added = [k for k in THREAD_VARS if k not in os.environ]
        for k in added:
            os.environ[k] = "1"
        try:
            yield
        finally:
            for k in added:
                os.environ.pop(k, None)


#: In a worker: the pool's start barrier (see :meth:`WorkerPool.warm`).
_STARTED: Any = None
#: How long a worker waits at the start barrier for the others, s.
_START_TIMEOUT_S = 60.0


def _init_worker(started: Any) -> None:
    """Worker initializer: remember the pool's start barrier; tune malloc."""
    global _STARTED
    _STARTED = started
    _tune_malloc()


def _ready() -> int:
    """The warm-up job: returns (this worker's pid) once every worker of the pool has started."""
    if _STARTED is not None:
        _STARTED.wait(_START_TIMEOUT_S)
    return os.getpid()


#: glibc ``mallopt`` parameters and the values workers use: allocations below 32 MB (the largest
#: threshold glibc accepts on 64-bit systems) come from the heap, and free heap memory is not
#: trimmed during a job (:func:`_release_memory` gives it back after each job).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


@functools.lru_cache(maxsize=None)
def _libc() -> Any:
    """The C library when it is glibc (which has ``mallopt``/``malloc_trim``), else None."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _tune_malloc() -> None:
    """Worker initializer: keep temporaries of up to 32 MB in the heap during a job."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)


def _release_memory() -> None:
    """Give the heap's free memory back to the system (between jobs)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run one job in a worker, then release the memory it freed."""
    try:
        return fn(*args, **kwargs)
    finally:
        _release_memory()


class WorkerPool:
    """A process pool of ``processes`` workers that may be started ahead of use.

    Use as a context manager; :meth:`warm` starts every worker from a background thread and
    returns at once. :meth:`submit` is :meth:`concurrent.futures.Executor.submit`.
    """

    def __init__(self, processes: int):
        self.processes = max(1, int(processes))
        context = pool_context()
        with single_threaded_children():
            self._executor = ProcessPoolExecutor(max_workers=self.processes, mp_context=context,
                                                 initializer=_init_worker,
                                                 initargs=(context.Barrier(self.processes),))
        self._warming: threading.Thread | None = None

    def warm(self) -> None:
        """Start every worker, in the background (the fork server's imports included).

        Each worker runs one warm-up job that waits at a barrier until all have started, so
        warming starts all of them. Every job is submitted after that (:meth:`submit` warms the
        pool first), so that no worker is ever started once jobs run: in Python 3.11, a worker
        started while another one dies escapes the executor's clean-up, which then waits for it
        forever (a hang instead of an error, seen with a crashing worker)."""
        if self._warming is not None:
            return

        def start() -> None:
            with contextlib.suppress(Exception):  # a failure shows again, clearly, at first use
                with single_threaded_children():
                    futures = [self._executor.submit(_ready) for _ in range(self.processes)]
                for fut in futures:
                    fut.result()

        self._warming = threading.Thread(target=start, name="expertmix-warm-workers", daemon=True)
        self._warming.start()

    def _wait_warm(self) -> None:
        if self._warming is None:
            self.warm()
        self._warming.join()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        self._wait_warm()  # one thread at a time spawns workers
        with single_threaded_children():
            return self._executor.submit(_call, fn, args, kwargs)

    def map_ordered(self, fn: Callable[..., Any], args: Sequence[tuple],
                    on_done: Callable[[int, int], None] | None = None,
                    costs: Sequence[float] | None = None) -> list[Any]:
        """``[fn(*a) for a in args]``, run in the workers; results in ``args`` order.

        ``on_done(index, done)`` is called as each job finishes (``done``: how many have, 1 ..
        len(args)). If jobs fail, the first failure *in ``args`` order* is raised (so errors do
        not depend on timing) and the jobs not yet started are cancelled. ``costs`` (one per
        job, any unit): the costliest jobs are submitted first, so that no worker is left with
        a long job at the end while the others wait (longest processing time first).
        """
        order = list(range(len(args)))
        if costs is not None:
            order.sort(key=lambda i: (-float(costs[i]), i))
        submitted = {i: self.submit(fn, *args[i]) for i in order}
        futures = [submitted[i] for i in range(len(args))]
        index = {fut: i for i, fut in enumerate(futures)}
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                if fut.exception() is not None:
                    break
                if on_done is not None:
                    on_done(index[fut], done)
            for fut in futures:  # waits for the earlier jobs; raises the first failure in order
                if fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            return [fut.result() for fut in futures]
        finally:
            for fut in futures:
                fut.cancel()

    def shutdown(self) -> None:
        if self._warming is not None:
            self._warming.join()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


@contextlib.contextmanager
def worker_pool(processes: int, pool: WorkerPool | None = None) -> Iterator[WorkerPool]:
    """``pool`` if one is given (left running), else a new pool shut down on exit."""
    if pool is not None:
        yield pool
        return
    with WorkerPool(processes) as own:
        yield own


#: A pool started by :func:`prestart`, waiting for :func:`started_pool` to adopt it.
_PRESTARTED: WorkerPool | None = None


def prestart(processes: int = DEFAULT_PROCESSES) -> None:
    """Start warming a pool of ``processes`` workers now, for the next :func:`started_pool` of
    the same size to adopt. The ``expertmix`` console script calls this before it imports the
    CLI (Typer, rich, pydantic: ~0.2 s), so that the workers' fork server starts that much
    earlier. A pool nobody adopts is shut down at exit."""
    global _PRESTARTED
    if _PRESTARTED is not None or processes <= 1:
        return
    _PRESTARTED = WorkerPool(processes)
    _PRESTARTED.warm()
    atexit.register(_shutdown_prestarted)


def _shutdown_prestarted() -> None:
    global _PRESTARTED
    pool, _PRESTARTED = _PRESTARTED, None
    if pool is not None:
        pool.shutdown()


@contextlib.contextmanager
def started_pool(processes: int = DEFAULT_PROCESSES) -> Iterator[WorkerPool | None]:
    """A pool of ``processes`` workers that starts warming at once (``None`` for one process),
    or the one :func:`prestart` started if it has that size.

    For callers that can start the workers before their own heavy imports (the CLI starts them
    before importing the pipeline, so the fork server's imports and the main process's run on
    two cores at once); pass it on as ``pool=``. Shut down on exit.
    """
    global _PRESTARTED
    if processes <= 1:
        yield None
        return
    if _PRESTARTED is not None and _PRESTARTED.processes == processes:
        pool, _PRESTARTED = _PRESTARTED, None
    else:
        pool = WorkerPool(processes)
        pool.warm()
    with pool:
        yield pool
