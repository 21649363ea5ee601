"""Backends that solve sweep points: in this process, in local worker processes, or on Dask.

Every backend is a context manager with one method,
``map(function, compute, work)``, which calls ``function(compute, index, point)``
for every ``(index, point)`` of ``work`` and yields the return values in the
order they finish. ``function`` catches the errors of a point itself, so a
backend only reports failures of its own (a worker process that died), as the
same ``(index, row, arrays, error, seconds)`` tuple with an error text.

On ``KeyboardInterrupt`` a backend cancels the points not yet started and stops
its workers, so the caller can exit at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

# Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT = 5.0

# Seconds between a worker's checks that the main process is still alive.
_WATCHDOG_INTERVAL = 1.0


def make_backend(jobs: int | None = None, scheduler: str | None = None, start: bool = True):
    """Choose a backend from the command-line options.

    Parameters
    ----------
    jobs : int or None
        Number of workers; ``None`` means ``os.cpu_count()``.
    scheduler : str or None
        ``None``: local processes (or this process when ``jobs`` is 1).
        ``"local"``: a Dask ``LocalCluster`` with ``jobs`` single-threaded
        workers on 127.0.0.1. Anything else: the address of a running Dask
        scheduler, such as ``tcp://10.0.0.5:8786``.
    start : bool
        Whether any point will be solved; if not, no workers are started.

    Raises
    ------
    ValueError
        If ``jobs`` is not a positive integer.
    """
    if jobs is None:
        jobs = os.cpu_count() or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {jobs!r}")
    if not start:
        return SerialBackend()
    if scheduler is None:
        return SerialBackend() if jobs == 1 else ProcessBackend(jobs)
    if scheduler == "local":
        return DaskBackend(jobs=jobs)
    return DaskBackend(address=scheduler)


class SerialBackend:
    """Solve points one after the other in this process."""

    description = "in-process"

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False

    def map(self, function, compute, work):
        for index, point in work:
            yield function(compute, index, point)


def _prepare_worker(parent: int):
    """Set up a worker process: ignore Ctrl-C and exit when the main process is gone."""
    # Only the main process reacts to Ctrl-C; it then stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A killed main process cannot stop its workers, and they would wait for
    # work forever because they hold the write end of their own task queue.
    # The watchdog ends the worker once it has been re-parented, at the latest
    # when its current point returns control to Python.
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="orphan-watchdog").start()


def _exit_when_orphaned(parent: int):
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_INTERVAL)
    os._exit(1)


class ProcessBackend:
    """Solve points in ``jobs`` worker processes on this machine.

    Workers are started with ``spawn``, so they share no state (Numba,
    threads, open files) with the main process.
    """

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.description = f"processes ({jobs} workers)"
        self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        return False

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_prepare_worker, initargs=(os.getpid(),))
        return self._executor

    def map(self, function, compute, work):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        work = list(work)
        if not work:
            return
        executor = self._start()
        futures = {executor.submit(function, compute, index, point): index
                   for index, point in work}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    yield (futures[future], {}, {}, "worker process died (killed or out of memory)",
                           float("nan"))
        except BaseException:
            self._stop_now()
            raise
        if any(isinstance(future.exception(), BrokenProcessPool) for future in futures):
            # A broken pool cannot take more work; the next map starts a new one.
            self._stop_now()

    def _stop_now(self):
        """Cancel queued points and terminate the workers without waiting for running ones."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # NOTE: ProcessPoolExecutor has no public way to stop running tasks
        # before Python 3.14, so the workers are terminated through its
        # private process table.
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


class DaskBackend:
    """Solve points on a Dask distributed cluster.

    Parameters
    ----------
    address : str or None
        Scheduler address; ``None`` starts a ``LocalCluster`` on 127.0.0.1.
    jobs : int
        Workers of the ``LocalCluster`` (ignored with ``address``).
    cluster_options : dict or None
        Extra keyword arguments for ``LocalCluster``, such as ``processes=False``.
    connect_timeout : float
        Seconds to wait for the scheduler before raising ``ValueError``.
    """

    def __init__(self, address: str | None = None, jobs: int = 1, cluster_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.address = address
        self.jobs = jobs
        self.cluster_options = dict(cluster_options or {})
        self.connect_timeout = connect_timeout
        self.description = (f"dask scheduler {address}" if address
                            else f"dask LocalCluster ({jobs} workers)")
        self._cluster = None
        self._client = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.address is None:
            options = dict(n_workers=self.jobs, threads_per_worker=1, processes=True,
                           dashboard_address=None)
            options.update(self.cluster_options)
            if options["processes"]:
                # Workers in processes talk over TCP: listen on loopback only, on a
                # free port. Thread workers use in-process transport and no socket.
                options.setdefault("host", "127.0.0.1")
                options.setdefault("scheduler_port", 0)
            self._cluster = LocalCluster(**options)
            self._client = Client(self._cluster)
            return self
        try:
            self._client = Client(self.address, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as error:
            raise ValueError(
                f"--scheduler: cannot reach the Dask scheduler at {self.address!r} within "
                f"{self.connect_timeout:g} s ({type(error).__name__}); start it, check the "
                "address, or use --scheduler local") from None
        except ValueError as error:
            # Dask rejects malformed addresses such as 'host' without a port.
            raise ValueError(f"--scheduler: invalid Dask scheduler address {self.address!r} ({error}); "
                             "expected tcp://HOST:PORT or 'local'") from None
        return self

    def __exit__(self, *exception):
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None
        return False

    def map(self, function, compute, work):
        from distributed import as_completed

        work = list(work)
        if not work:
            return
        futures = {}
        for index, point in work:
            future = self._client.submit(function, compute, index, point, pure=False)
            futures[future] = index
        try:
            for future in as_completed(list(futures)):
                try:
                    yield future.result()
                except Exception as error:  # noqa: BLE001 - worker lost, KilledWorker, ...
                    yield (futures[future], {}, {},
                           f"dask task failed: {type(error).__name__}: {error}", float("nan"))
        except BaseException:
            self._client.cancel(list(futures))
            raise
