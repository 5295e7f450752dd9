"""Signals that end a run the way Ctrl-C does, at whatever phase it is in."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any


class Signals:
    """SIGTERM and SIGHUP (the terminal closed, the SSH session dropped) end a run as Ctrl-C does:
    interrupted (exit 130), the sandbox stopped, the temp dir removed, the history row and the
    trace finished. One Python-level handler covers the whole run:
    - before the event loop runs (loading the input, checking credentials, making the sandbox) it
      raises KeyboardInterrupt, as SIGINT does, so the `finally` that removes the temp dir runs;
    - while the loop runs, it cancels the run's task (asyncio.Runner does the same for SIGINT);
    - once clean-up has begun (`hold`), it is ignored: clean-up is short and must finish.
    Handlers belong to the main thread: runs driven from worker threads (rlm bench) install none.
    A signal that was ignored when rlm started (`nohup rlm ...`) stays ignored.
    """

    HANDLED = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.holding = False
        self.received: int | None = None  # the last signal seen, even while holding

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.HANDLED:
                current = signal.getsignal(sig)
                if current is not signal.SIG_IGN:
                    self.previous[sig] = signal.SIG_DFL if current is None else current
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def watch(self, task: asyncio.Task) -> None:
        """From now on a signal cancels `task` (it runs on the current loop)."""
        self.loop, self.task = asyncio.get_running_loop(), task

    def hold(self) -> None:
        self.holding, self.task = True, None

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        if self.holding:
            return
        if self.loop is not None and self.task is not None:
            # Called between any two bytecodes of the loop: only schedule; the callback checks
            # again, so a cancel can never land in the clean-up.
            self.loop.call_soon_threadsafe(self._cancel)
            return
        raise KeyboardInterrupt

    def _cancel(self) -> None:
        if not self.holding and self.task is not None:
            self.task.cancel()
