"""The rlm REPL server: one persistent Python namespace, driven by the host over framed JSON.

Runs inside the sandbox (a local child process or a container), so it must stay a single file,
standard library only, Python 3.9+. The host speaks to it over the stdin/stdout it was started
with; each frame is a 4-byte big-endian length followed by UTF-8 JSON.

Host -> server: {"op": "load", "context_path", "index_path", "max_output_chars"}
                {"op": "exec", "code", "timeout"}    {"op": "get", "name"}    {"op": "shutdown"}
                {"type": "llm_reply", "id", "replies"} (only while a cell waits in llm_query)
Server -> host: {"type": "ready", "python"}   {"type": "loaded", "chars", "files"}
                {"type": "result", "output", "error", "final", "restored", "duration"}
                {"type": "value", "value"} / {"type": "error", "error"}
                {"type": "llm_query", "id", "prompts", "model"} (a cell asks the host for sub-calls)

The host validates every frame it gets (rlmcli/frames.py) and treats a bad one as a dead server.
So this side keeps to the same caps (MAX_SEND and below): a cell that would break one gets an
error it can act on (an oversized batch, an answer without a text form), never a killed REPL.

The protocol channel is immune to user output: the original descriptors are duplicated for the
protocol, then fd 0 is pointed at /dev/null and fds 1 and 2 at a capture file, so print(),
sys.stdout.write() and os.system("echo x") all land in the capture, never on the channel.
"""

import ast
import errno
import io
import json
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from bisect import bisect_right
from collections.abc import Mapping

MAX_FRAME = 512 * 1024 * 1024  # host -> server
# Server -> host. The host refuses anything beyond these (rlmcli/frames.py): the server keeps to
# them, so that a legitimate cell gets an error it can act on, never a killed REPL.
MAX_SEND = 64 * 1024 * 1024
MAX_FINAL_CHARS = 10000000  # one answer (FINAL, FINAL_VAR)
MAX_PROMPTS = 100000  # prompts in one llm_query_batched call
MAX_PROMPT_CHARS = 8000000  # one prompt
GET_TIMEOUT = 10  # seconds for str() of a variable the host asks for (FINAL_VAR in a reply)
RESERVED = (
    "context", "files", "file_spans", "llm_query", "llm_query_batched",
    "FINAL", "FINAL_VAR", "SHOW_VARS", "grep", "count_tokens",
)  # fmt: skip


class FrameTooLarge(ValueError):
    """A frame the host would refuse; raised before anything is written."""


class CellTimeout(BaseException):
    """Raised in the cell by SIGALRM. A BaseException so `except Exception` in user code can't eat it."""


class Channel:
    """Framed JSON over two raw file descriptors, usable only by the server process itself.

    A process forked by a cell (os.fork, a fork bomb) inherits the descriptors and the cell's
    code; when its copy of the cell ends and reaches the channel, it exits instead of speaking.
    """

    def __init__(self, fd_in, fd_out):
        self.fin = os.fdopen(fd_in, "rb", buffering=0)
        self.fout = os.fdopen(fd_out, "wb", buffering=0)
        self.owner = os.getpid()

    def check_owner(self):
        if os.getpid() != self.owner:
            os._exit(0)

    def send(self, msg):
        self.check_owner()
        data = json.dumps(msg, ensure_ascii=False, default=str).encode("utf-8", "replace")
        if len(data) > MAX_SEND:
            raise FrameTooLarge("%d bytes in one message to the host; at most %d" % (len(data), MAX_SEND))
        self.fout.write(struct.pack(">I", len(data)) + data)

    def recv(self):
        self.check_owner()
        size = struct.unpack(">I", self._read(4))[0]
        if size > MAX_FRAME:
            raise ValueError("frame too large: %d bytes" % size)
        return json.loads(self._read(size).decode("utf-8"))

    def _read(self, n):
        chunks, got = [], 0
        while got < n:
            chunk = self.fin.read(n - got)
            if not chunk:
                raise EOFError("host closed the channel")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


class CappedWriter(io.TextIOBase):
    """sys.stdout/sys.stderr for cells: keeps the first `cap` characters, counts the rest.

    Memory stays bounded however much a cell prints (a 100 MB print costs a length, not a copy).
    """

    def __init__(self, cap):
        self.cap, self.parts, self.kept, self.total = cap, [], 0, 0

    def reset(self):
        self.parts, self.kept, self.total = [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        self.total += len(s)
        room = self.cap - self.kept
        if room > 0:
            piece = s[:room]
            self.parts.append(piece)
            self.kept += len(piece)
        return len(s)

    def text(self):
        return "".join(self.parts)


class Files(Mapping):
    """`files[path]` -> that file's text, sliced from `context` on access (no second copy)."""

    def __init__(self, context, spans):
        self._context, self._spans = context, spans

    def __getitem__(self, path):
        start, end = self._spans[path]
        return self._context[start:end]

    def __iter__(self):
        return iter(self._spans)

    def __len__(self):
        return len(self._spans)

    def __repr__(self):
        names = list(self._spans)
        more = " ... (%d more)" % (len(names) - 20) if len(names) > 20 else ""
        return "<files: %d: %s%s>" % (len(names), ", ".join(names[:20]), more)


class Match(tuple):
    """One grep hit: (path, line, text); prints as `path:line: text`."""

    __slots__ = ()

    def __new__(cls, path, line, text):
        return tuple.__new__(cls, (path, line, text))

    path = property(lambda self: self[0])
    line = property(lambda self: self[1])
    text = property(lambda self: self[2])

    def __repr__(self):
        return "%s:%d: %s" % self


class Server:
    def __init__(self, channel):
        self.channel = channel
        self.cap = 20000
        self.out = CappedWriter(self.cap)
        self.capture = tempfile.TemporaryFile()  # fd-level output of child processes
        self.context, self.spans = "", {}
        self.starts, self.paths = [], []
        self.ns = {"__name__": "__main__", "__builtins__": __builtins__}
        self.final = None
        self.lock = threading.Lock()
        self.next_id = 0

    # ---------- commands ----------

    def serve(self):
        self.channel.send({"type": "ready", "python": sys.version.split()[0]})
        while True:
            msg = self.channel.recv()
            op = msg.get("op")
            if op == "exec":
                self.reply(self.run_cell(msg["code"], float(msg.get("timeout") or 0)))
            elif op == "load":
                try:
                    reply = self.load(msg)
                except (MemoryError, OSError, ValueError, KeyError) as exc:  # say so, don't die
                    out_of_memory = (
                        isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM
                    )
                    reply = {
                        "type": "error",
                        "error": "%s: %s" % (type(exc).__name__, exc),
                        "out_of_memory": out_of_memory,
                    }
                self.channel.send(reply)
            elif op == "get":
                self.reply(self.get(msg["name"]))
            elif op == "shutdown":
                return
            elif msg.get("type") == "llm_reply":
                continue  # a late reply to a sub-call whose cell already ended
            else:
                self.channel.send({"type": "error", "error": "unknown op %r" % (op,)})

    def reply(self, msg):
        """Send an answer to the host; one too large to send becomes an error the model sees."""
        try:
            self.channel.send(msg)
        except FrameTooLarge as exc:
            error = "the result is too large to send to the host (%s); print less" % exc
            if msg.get("type") == "result":
                msg = dict(msg, output=clip(msg["output"], 2000), error=error, final=None)
            else:
                msg = {"type": "error", "error": error}
            self.channel.send(msg)

    def load(self, msg):
        self.cap = int(msg.get("max_output_chars") or self.cap)
        self.out = CappedWriter(self.cap)
        sys.stdout = sys.stderr = self.out
        self.context = read_text(msg["context_path"])
        spans = {}
        if msg.get("index_path"):
            with open(msg["index_path"], encoding="utf-8") as f:
                spans = {p: tuple(se) for p, se in json.load(f)["files"].items()}
        self.spans = spans
        ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
        self.starts = [se[0] for _, se in ordered]
        self.paths = [p for p, _ in ordered]
        self.install_reserved()
        return {"type": "loaded", "chars": len(self.context), "files": len(spans)}

    def get(self, name):
        """A variable as answer text; one that cannot be turned into text is an error, not a crash."""
        if name not in self.ns:
            return {"type": "error", "error": "variable %r is not defined" % name}
        signal.setitimer(signal.ITIMER_REAL, GET_TIMEOUT)  # str() runs the cell's code (__str__)
        try:
            try:
                return {"type": "value", "value": answer_text(self.ns[name], "FINAL_VAR(%s)" % name)}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CellTimeout:
            return {"type": "error", "error": "str() of %r ran longer than %ds" % (name, GET_TIMEOUT)}
        except BaseException as exc:  # noqa: B036 - whatever __str__ raises is the model's to see
            return {"type": "error", "error": describe(exc)}

    # ---------- cells ----------

    def run_cell(self, code, timeout):
        sys.stdout = sys.stderr = self.out  # a previous cell may have replaced them
        self.out.reset()
        os.ftruncate(self.capture.fileno(), 0)
        os.lseek(self.capture.fileno(), 0, os.SEEK_SET)
        self.final = None
        error = None
        started = time.monotonic()
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            try:
                self.execute(code)
            finally:  # disarmed before the error is reported: a late alarm there would kill the server
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CellTimeout:
            error = (
                "TimeoutError: the cell ran longer than %gs and was stopped (state so far is kept)" % timeout
            )
        except SystemExit:
            error = "SystemExit: exiting is not allowed here; the REPL is still running"
        except BaseException:  # noqa: B036 - anything a cell raises is reported to the model, never fatal
            error = self.format_exception()
        restored = self.restore_reserved()
        if error is not None:  # one cap covers output and error: the error keeps up to half of it
            error = clip(error, self.cap // 2, "error")
        return {
            "type": "result",
            "output": self.collect_output(self.cap - len(error or "")),
            "error": error,
            "final": self.final,
            "restored": restored,
            "duration": time.monotonic() - started,
        }

    def execute(self, code):
        """Run code like a notebook cell: the value of a trailing expression is printed."""
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), self.ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), self.ns)
            if value is not None:
                self.out.write(repr(value) + "\n")

    def format_exception(self):
        """The traceback of the cell's frames only. Formatting runs the exception's own code
        (__str__, __notes__), so it gets a few seconds, and a failure is reported, not raised."""
        etype, value, tb = sys.exc_info()
        signal.setitimer(signal.ITIMER_REAL, 5)
        try:
            try:
                frames = traceback.extract_tb(tb)
                # Show only the user's frames, not this server's.
                user = [f for f in frames if f.filename == "<cell>"]
                lines = traceback.format_list(user) if user else []
                head = "".join(["Traceback (most recent call last):\n"] + lines if lines else [])
                return head + "".join(traceback.format_exception_only(etype, value))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException:  # noqa: B036 - the report must not fail
            return "%s (its message could not be shown)" % getattr(etype, "__name__", "Exception")

    def collect_output(self, room):
        """The cell's output, at most `room` characters of it and a marker saying what was cut."""
        room = max(0, room)
        text, total = self.out.text(), self.out.total
        fd = self.capture.fileno()
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, min(size, self.cap * 4))
            fd_text = raw.decode("utf-8", "replace")
            text += fd_text
            total += len(fd_text) + max(0, size - len(raw))
        if total > len(text) or len(text) > room:
            text = text[:room]
            text += "\n[... output truncated: %d more characters not shown (cap %d); print less]" % (
                total - len(text),
                self.cap,
            )
        return text

    # ---------- the names a cell sees ----------

    def install_reserved(self):
        self.reserved = {
            "context": self.context,
            "files": Files(self.context, self.spans),
            "file_spans": dict(self.spans),
            "llm_query": self.llm_query,
            "llm_query_batched": self.llm_query_batched,
            "FINAL": self.FINAL,
            "FINAL_VAR": self.FINAL_VAR,
            "SHOW_VARS": self.SHOW_VARS,
            "grep": self.grep,
            "count_tokens": count_tokens,
        }
        self.ns.update(self.reserved)

    def restore_reserved(self):
        restored = [n for n, v in self.reserved.items() if self.ns.get(n) is not v]
        for name in restored:
            self.ns[name] = self.reserved[name]
        return restored

    def llm_query(self, prompt, model=None):
        """Ask a sub-model one question; returns its answer as a string."""
        return self.ask_host([prompt], model)[0]

    def llm_query_batched(self, prompts, model=None):
        """Ask many questions concurrently (on the host); returns answers in order."""
        prompts = list(prompts)
        return self.ask_host(prompts, model) if prompts else []

    def ask_host(self, prompts, model):
        """Replies for `prompts`, from the host. Within the protocol's caps, so the host never
        sees a frame it must refuse: too many prompts or too many bytes raise here, in the cell;
        a prompt over the size cap gets an error string in its slot, as a failed sub-call does."""
        prompts = [str(p) for p in prompts]
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(
                "%d prompts in one llm_query_batched call; at most %d: split the batch"
                % (len(prompts), MAX_PROMPTS)
            )
        model = None if model is None else str(model)
        replies = [
            "[llm_query error: the prompt is %d characters; at most %d]" % (len(p), MAX_PROMPT_CHARS)
            if len(p) > MAX_PROMPT_CHARS
            else None
            for p in prompts
        ]
        todo = [i for i, r in enumerate(replies) if r is None]
        if todo:
            try:
                got = self.exchange([prompts[i] for i in todo], model)
            except FrameTooLarge as exc:
                raise ValueError(
                    "the prompts of one call are too large to send (%s): split the batch" % exc
                ) from None
            for k, i in enumerate(todo):
                replies[i] = got[k]
        return replies

    def exchange(self, prompts, model):
        """One llm_query frame to the host, and its reply."""
        with self.lock:
            # Time spent waiting for the host's model calls is not the cell's: pause the cell timer.
            remaining = signal.setitimer(signal.ITIMER_REAL, 0)[0]
            try:
                self.next_id += 1
                ident = self.next_id
                self.channel.send({"type": "llm_query", "id": ident, "prompts": prompts, "model": model})
                while True:
                    msg = self.channel.recv()
                    if msg.get("type") == "llm_reply" and msg.get("id") == ident:
                        return [str(r) for r in msg["replies"]]
            finally:
                if remaining > 0:
                    signal.setitimer(signal.ITIMER_REAL, remaining)

    def FINAL(self, answer):
        """Give the final answer and end the run."""
        self.final = answer_text(answer, "FINAL")

    def FINAL_VAR(self, name):
        """Give the value of a variable (by name, or the value itself) as the final answer."""
        if isinstance(name, str):
            key = name.strip().strip("'\"")
            if key not in self.ns:
                print(
                    "FINAL_VAR: no variable named %r; assign it first, then call FINAL_VAR(%r)" % (key, key)
                )
                return None
            name = self.ns[key]
        self.final = answer_text(name, "FINAL_VAR")

    def SHOW_VARS(self):
        """Print the variables defined so far, with their types and sizes."""
        rows = []
        for key, value in self.ns.items():
            if key.startswith("_") or key in self.reserved or key == "__builtins__":
                continue
            size = ""
            try:
                size = " len=%d" % len(value)
            except Exception:
                pass
            rows.append("%s: %s%s" % (key, type(value).__name__, size))
        print("\n".join(rows) if rows else "(no variables yet)")

    def grep(self, pattern, path=None, ignore_case=False, max_matches=10000):
        """Regex search over `context` (or one file): one (path, line, text) hit per matching line.

        Stops at `max_matches` (None: no cap) and says so in the cell output, so that
        len(grep(...)) is never silently an undercount.
        """
        rx = re.compile(pattern, (re.IGNORECASE if ignore_case else 0) | re.MULTILINE)
        text = self.context
        start, end = self.spans[path] if path is not None else (0, len(text))
        ends = [self.spans[p][1] for p in self.paths]
        hits, pos = [], start
        file_idx, line_no, counted_to = None, 1, 0
        while pos <= end:
            m = rx.search(text, pos, end)
            if m is None:
                break
            at = m.start()
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at, end)
            line_end = end if line_end < 0 else line_end
            pos = line_end + 1  # one hit per line, as grep does
            idx = bisect_right(self.starts, at) - 1
            if self.paths and (idx < 0 or at >= ends[idx]):
                continue  # a `==> path <==` header line, not file content
            if idx != file_idx:  # entered a new file: count lines from its start
                file_idx = idx
                line_no, counted_to = 1, (self.starts[idx] if idx >= 0 else 0)
            line_no += text.count("\n", counted_to, line_start)
            counted_to = line_start
            name = self.paths[idx] if idx >= 0 else "<context>"
            hits.append(Match(name, line_no, text[line_start:line_end][:500]))
            if max_matches is not None and len(hits) >= max_matches:
                print(
                    "grep: stopped at max_matches=%d; there may be more (pass max_matches=None)" % max_matches
                )
                break
        return hits


def describe(exc):
    """`Type: message` of an exception whose own __str__ may fail."""
    try:
        message = str(exc)
    except Exception:
        message = "(its message could not be shown)"
    return "%s: %s" % (type(exc).__name__, message) if message else type(exc).__name__


def answer_text(value, what):
    """The answer as a plain str. A value without a text form (str() raises, a 5,000-digit int)
    or one too long to send is a ValueError in the cell, so the model sees it and the REPL lives."""
    try:
        text = str.__str__(str(value))  # an exact str: a subclass could lie about its length
    except Exception as exc:
        raise ValueError("%s: the value has no text form (%s)" % (what, describe(exc))) from None
    if len(text) > MAX_FINAL_CHARS:
        raise ValueError(
            "%s: the answer is %d characters; at most %d: give a shorter answer"
            % (what, len(text), MAX_FINAL_CHARS)
        )
    return text


def clip(text, limit, what="output"):
    """At most about `limit` characters: the head, the tail, and a marker saying what was cut."""
    if len(text) <= limit:
        return text
    head = max(0, limit * 2 // 3)
    tail = max(0, limit - head)
    marker = "\n[... %s truncated: %d characters not shown (cap %d) ...]\n" % (
        what,
        len(text) - head - tail,
        limit,
    )
    return text[:head] + marker + (text[-tail:] if tail else "")


def read_text(path):
    """The whole file as one str, decoded straight from a memory map: no intermediate bytes copy
    and no newline translation (the host's offsets count characters of the file verbatim)."""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return ""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return str(mapped, "utf-8", "replace")


def count_tokens(text):
    """Estimated tokens of a string (about 4 characters a token)."""
    return max(1, len(str(text)) // 4) if text else 0


def on_alarm(signum, frame):
    raise CellTimeout()


def limit_memory(argv):
    """`--max-memory BYTES`: cap our address space so a huge allocation is a MemoryError in the
    cell, not an out-of-memory kill of the whole REPL (the container's cgroup is the backstop)."""
    if "--max-memory" in argv:
        import resource

        limit = int(argv[argv.index("--max-memory") + 1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main():
    limit_memory(sys.argv[1:])
    # Keep private copies of the protocol descriptors, then take fds 0/1/2 away from user code.
    channel = Channel(os.dup(0), os.dup(1))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    server = Server(channel)
    cap_fd = server.capture.fileno()
    os.dup2(cap_fd, 1)
    os.dup2(cap_fd, 2)
    sys.stdin = open(os.devnull)
    sys.stdout = sys.stderr = server.out
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when we stop
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the file-size limit fails, not kills
    try:
        server.serve()
    except EOFError:
        pass


if __name__ == "__main__":
    main()
