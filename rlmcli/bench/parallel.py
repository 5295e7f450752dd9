"""Bench rows on several threads (`rlm bench run --concurrency K`), recorded on the main thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any


def run_parallel(jobs: list, k: int, work: Callable[[Any], dict], record: Callable[[dict], None]) -> None:
    """Run jobs on k daemon threads; results are recorded on the calling (main) thread only.

    Daemon threads, not a ThreadPoolExecutor: on Ctrl-C the main thread must be able to leave at
    once, and an executor's threads are joined at exit, which would wait for every row in flight.
    Their local sandboxes die with the process (PR_SET_PDEATHSIG); Docker leftovers are pruned by
    the next run.
    """
    _quiet_litellm_logging_worker()
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    finished: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                finished.put((work(job), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
                finished.put((None, exc))
                return

    for i in range(min(k, len(jobs))):
        threading.Thread(target=worker, name=f"rlm-bench-{i}", daemon=True).start()
    try:
        for _ in jobs:
            while True:
                try:
                    result, exc = finished.get(timeout=0.2)  # a timeout keeps Ctrl-C responsive
                    break
                except queue.Empty:
                    continue
            if exc is not None:
                raise exc
            record(result)
    finally:
        stop.set()


def _quiet_litellm_logging_worker() -> None:
    """Drop asyncio's reports about litellm's LoggingWorker when rows run on several threads.

    litellm keeps one global LoggingWorker (success callbacks, which rlm does not use) and rebinds
    it to whichever event loop called last; with one loop per row thread, the worker task of the
    other loops then fails ("bound to a different event loop", "cannot reuse already awaited
    coroutine") with a traceback on stderr. Answers, tokens and costs are unaffected: costs come
    with each response, not from those callbacks.
    """
    for name in ("asyncio", "LiteLLM"):  # asyncio's task reports, and litellm's own error lines
        log = logging.getLogger(name)
        if not any(isinstance(f, _LoggingWorkerNoise) for f in log.filters):
            log.addFilter(_LoggingWorkerNoise())


class _LoggingWorkerNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LoggingWorker" not in record.getMessage()
