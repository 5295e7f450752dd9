"""The full pass over a surveyed file (survey.py), in a process of its own.

Not a thread: the pass is CPU work in C that holds the GIL (the secrets scan, the line count, the
decode), and a thread running it left the main thread ~45% of its speed (measured on 2 CPUs) just
when it prepares the first request; and a thread still inside the scanner's C++ when the interpreter
exits aborts the process. A process uses another core and is simply killed when the run ends first.
It costs ~0.2 s of CPU to start (Python and rlmcli.context's imports), on that other core.

The child reads (paths, workdir, options) pickled on stdin and writes its outcome pickled on stdout:
("ok", Context), ("input", message, hint) for an InputError, ("bug", text) for anything else. It is
our own code on our own input, so pickle is safe here. It runs in a session of its own, so a Ctrl-C
at the terminal reaches only `rlm`, which stops it.

    python -m rlmcli.load_pass   (never by hand)
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from .errors import InputError
from .walk import LoadOptions

POLL = 0.05  # seconds between looks at the stop event while the child works


class Stopped(Exception):
    """The pass was stopped (Context.cancel): the run ended before it did."""


def start(paths: list[str], workdir: Path, options: LoadOptions, stop: threading.Event) -> Future:
    """Start the pass; its Context (or error) arrives in the returned Future. Setting `stop` kills
    the child; the Future then holds Stopped."""
    payload = pickle.dumps((paths, str(workdir), options))
    child = subprocess.Popen(
        [sys.executable, "-m", "rlmcli.load_pass"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    future: Future = Future()
    future.set_running_or_notify_cancel()  # running: an asyncio wrapper's cancel is refused

    def watch() -> None:
        given: bytes | None = payload  # input goes with the first call only (a retry may not resend it)
        while True:
            try:
                out, err = child.communicate(given, timeout=POLL)
                break
            except subprocess.TimeoutExpired:
                given = None
                if stop.is_set():
                    child.kill()
                    child.communicate()
                    future.set_exception(Stopped("the load was stopped"))
                    return
        try:
            future.set_result(_outcome(out, err, child.returncode))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            future.set_exception(exc)

    def guarded() -> None:
        try:
            watch()
        except BaseException as exc:  # noqa: BLE001 - a waiter must never wait forever
            child.kill()
            if not future.done():
                future.set_exception(RuntimeError(f"the load of the input failed: {exc}"))

    threading.Thread(target=guarded, name="rlm-load", daemon=True).start()
    return future


def _outcome(out: bytes, err: bytes, status: int):  # noqa: ANN202 - a Context; imported lazily
    try:
        outcome = pickle.loads(out)
    except Exception:  # noqa: BLE001 - a child that died before it could say anything
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {status}"]
        raise RuntimeError(f"the load of the input failed: {tail[0]}") from None
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "input":
        raise InputError(outcome[1], hint=outcome[2])
    raise RuntimeError(f"the load of the input failed: {outcome[1]}")


def main() -> None:
    from .context import load_context

    paths, workdir, options = pickle.load(sys.stdin.buffer)
    try:
        outcome: tuple = ("ok", load_context(paths, Path(workdir), options))
    except InputError as exc:
        outcome = ("input", str(exc), exc.hint)
    except Exception as exc:  # noqa: BLE001 - said to the parent, which raises it as a bug
        outcome = ("bug", f"{type(exc).__name__}: {exc}")
    pickle.dump(outcome, sys.stdout.buffer)


if __name__ == "__main__":
    main()
