"""Internal: the process-wide thread pool and ``run_pipeline``, the scheduler of ``save``.

The encoder's deflate releases the GIL, so threads use every core. See
:func:`run_pipeline` for why its three stages run where they do.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """Worker threads used when ``workers=None``: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def shared_pool() -> ThreadPoolExecutor:
    """A process-wide pool of :func:`default_workers` threads, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(default_workers(), thread_name_prefix="tensorpng")
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: it makes its own pool (and lock)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


Prepared = TypeVar("Prepared")
Processed = TypeVar("Processed")
Result = TypeVar("Result")


def run_pipeline(
    count: int,
    prepare: Callable[[int], Prepared],
    process: Callable[[int, Prepared], Processed],
    complete: Callable[[int, Processed], Result],
    workers: int | None,
) -> list[Result]:
    """``complete(i, process(i, prepare(i)))`` for every ``i`` in ``range(count)`` on
    ``workers`` threads (default: one per CPU); the results of ``complete``, in order.

    ``prepare`` and ``complete`` run on the calling thread (``prepare`` in order); ``process``
    on ``workers - 1`` pool threads, and on the caller too whenever more than ``2 * workers``
    prepared items wait (which bounds the memory they hold) and once everything is prepared.
    Made for ``save``: preparing (converting and filtering) is NumPy's short calls, which
    take the GIL back each time, so two threads doing it hand the GIL to and fro and on two
    cores ran slower together than one alone; processing (the deflate) releases the GIL
    throughout and scales; completing (writing the file) goes fastest from one thread, since
    files created at once in one folder wait for each other in the kernel.

    Every item runs even if others fail; the first failure by index is raised at the end.
    An exception that is not an ``Exception`` (KeyboardInterrupt, SystemExit), on the caller
    or on a helper, stops the work: items not done yet are dropped, running ones are waited
    for, and it is raised.
    """
    threads = max(1, min(default_workers() if workers is None else workers, count))
    results: list[Any] = [None] * count
    failures: list[Exception | None] = [None] * count
    waiting: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
    processed: queue.SimpleQueue[tuple[int, Any, bool] | None] = queue.SimpleQueue()
    stopped = threading.Event()
    fatal: list[BaseException] = []  # a helper's KeyboardInterrupt or SystemExit, for the caller

    def process_one(index: int, item: Any) -> tuple[int, Any, bool]:
        try:
            return index, process(index, item), True
        except Exception as error:  # raised below, after the others ran
            failures[index] = error
            return index, None, False

    def complete_one(index: int, value: Any, ok: bool) -> None:
        if ok:
            try:
                results[index] = complete(index, value)
            except Exception as error:
                failures[index] = error

    def help_process() -> None:
        while True:
            try:
                entry = waiting.get(timeout=_WAIT_SECONDS)
            except queue.Empty:
                if stopped.is_set():  # the caller left without its stop markers (a 2nd Ctrl-C)
                    return
                continue
            if entry is None:
                return
            if stopped.is_set():
                continue
            try:
                processed.put(process_one(*entry))
            except BaseException as error:
                fatal.append(error)
                stopped.set()
                processed.put(None)  # wake the caller if it waits
            del entry  # do not hold the last item while waiting for the next

    pool: ThreadPoolExecutor | None = None
    helpers: list[Future[None]] = []
    if threads > 1:
        pool = shared_pool() if workers is None else ThreadPoolExecutor(threads - 1, "tensorpng")
        helpers = [pool.submit(help_process) for _ in range(threads - 1)]
    outstanding = 0  # prepared, not completed yet

    def complete_ready(block: bool) -> None:
        """Complete what the helpers processed (waiting for one item when ``block``)."""
        nonlocal outstanding
        while outstanding and not stopped.is_set():
            try:
                entry = processed.get(timeout=_WAIT_SECONDS) if block else processed.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            if entry is not None:
                outstanding -= 1
                complete_one(*entry)
            block = False

    def process_here() -> bool:
        """Process and complete one waiting item on this thread; False when none waits."""
        nonlocal outstanding
        try:
            entry = waiting.get_nowait()
        except queue.Empty:
            return False
        assert entry is not None  # the stop markers go in only after the caller is done
        outstanding -= 1
        complete_one(*process_one(*entry))
        return True

    try:
        for index in range(count):
            if stopped.is_set():
                break
            try:
                item = prepare(index)
            except Exception as error:
                failures[index] = error
                continue
            if not helpers:
                complete_one(*process_one(index, item))
                continue
            waiting.put((index, item))
            outstanding += 1
            complete_ready(block=False)
            while waiting.qsize() > 2 * threads and not stopped.is_set():  # helpers fall behind
                process_here()
        while outstanding and not stopped.is_set():  # everything prepared
            if not process_here():
                complete_ready(block=True)
    finally:
        stopped.set()  # done, or interrupted: helpers drop what waits and leave
        for _ in helpers:
            waiting.put(None)
        for helper in helpers:
            if not helper.cancel():  # a helper that never started has nothing to finish
                helper.exception()
        if pool is not None and pool is not _pool:
            pool.shutdown(wait=True)
    if fatal:
        raise fatal[0]
    for failure in failures:
        if failure is not None:
            raise failure
    return results


_WAIT_SECONDS = 0.1  # how often a waiting caller (or helper) checks that the other side still runs


WORKER_NICENESS = 5


def yield_to_caller() -> None:
    """Lower this worker thread's CPU priority (Linux: per thread) so that the loop that
    feeds the writer keeps its cores; idle cores still go to the workers."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
