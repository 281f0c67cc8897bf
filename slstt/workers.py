"""Worker processes for long jobs (`slstt prepare --workers`, `slstt analyze --jobs`): spawned (mediapipe
and fork do not mix), dying with their parent, stopped at once on Ctrl-C / SIGTERM / an error, and a
worker that dies is one line, never a pool that restarts it forever."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from slstt.errors import SlsttError


def die_with_parent(parent_pid: int) -> None:
    """A worker never outlives its parent, whatever kills it (kill -9 included): an orphan would hold
    hundreds of MB, the resource tracker and the parent's stdout (so `slstt prepare | cat` would hang).
    Linux: the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG); everywhere: a thread
    polls the parent pid, which also covers a parent that died before prctl took effect."""
    import os
    import signal
    import sys
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    if hasattr(signal, "pthread_sigmask"):  # the parent blocks them while it starts the workers
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the poller below still applies
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def run_in_workers(function: Callable[..., Any], tasks: Iterable[tuple], workers: int,
                   on_result: Callable[[Any], None], *, what: str,
                   initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> None:
    """function(*task) for every task in `workers` spawned processes; on_result(result) here, in the
    order they finish. `what` names the option in the one line said when a worker dies (e.g.
    "analyze --jobs"). Queued tasks are dropped on an error: callers keep finished work on disk."""
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    tasks = list(tasks)
    if not tasks:
        return
    executor = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))
    blocked = hasattr(signal, "pthread_sigmask")  # a signal while a worker starts would half-start it
    try:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if blocked else None
        try:
            futures = [executor.submit(function, *task) for task in tasks]
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for future in as_completed(futures):
            on_result(future.result())
    except BrokenProcessPool:
        _stop(executor)
        raise SlsttError(f"{what}: a worker process died before its work was done (killed, out of memory, or a "
                         "Python script using worker processes without `if __name__ == \"__main__\":` around its "
                         "code, which Python's spawn runs again in every worker); fix that or use one process: "
                         "the same command resumes the finished work") from None
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown(wait=True)


def _stop(executor: Any) -> None:
    """Terminate the workers now: ProcessPoolExecutor.shutdown would wait for the running tasks."""
    # _processes is private (Python 3.14 has terminate_workers()); a snapshot: the executor's thread edits it
    # (the executor's thread drops a worker from it only on a clean shutdown, never on a broken pool)
    workers = list((getattr(executor, "_processes", None) or {}).values())
    for process in workers:
        process.terminate()
    # reaped before the caller's one line is said: a dying worker's traceback would interleave with it
    for process in workers:
        process.join(timeout=5)
    executor.shutdown(wait=False, cancel_futures=True)
