"""The rlm REPL server: one persistent Python namespace, driven by the host over framed JSON.

Runs inside the sandbox (a local child process or a container), so it must stay a single file,
standard library only, Python 3.9+. The host speaks to it over the stdin/stdout it was started
with; each frame is a 4-byte big-endian length followed by UTF-8 JSON.

Host -> server: {"op": "load", "context_path", "index_path", "max_output_chars"}
                {"op": "exec", "code", "timeout"}    {"op": "get", "name"}    {"op": "shutdown"}
                {"op": "citations"} (the spans cite() registered, for the host to check and cut)
                {"type": "llm_reply", "id", "replies"} (only while a cell waits in llm_query)
Server -> host: {"type": "ready", "python"}   {"type": "loaded", "chars", "files"}
                {"type": "result", "output", "error", "final", "restored", "duration"}
                {"type": "value", "value"} / {"type": "error", "error"}
                {"type": "citations", "spans": [{"marker", "path", "start_line", "end_line",
                                                 "byte_start", "byte_end"}, ...]}
                {"type": "llm_query", "id", "prompts", "model"} (a cell asks the host for sub-calls)
                {"type": "rlm_query", "id", "queries", "contexts", "model"} (a cell asks for child
                 RLMs; the host answers with an llm_reply, one text per query)

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
MAX_CITATIONS = 1000  # spans cite() registers in one run (rlmcli/repl/frames.py checks the same)
MAX_PATH_CHARS = 4096  # of a cited path: a loaded file's display path, never longer in practice
RESERVED = (
    "context", "files", "file_spans", "llm_query", "llm_query_batched",
    "FINAL", "FINAL_VAR", "SHOW_VARS", "grep", "count_tokens", "cite", "locate",
    "rlm_query", "rlm_query_batched",
)  # fmt: skip
STDIN_NAMES = ("-", "<stdin>")  # how a cell may name the standard input (its display path is <stdin>)


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


QUOTE_LINE = re.compile(r"^\s*(?:[-*]\s+)?QUOTE:\s*(.*?)\s*$")
QUOTES_NOTE = (
    "\n\nAfter your answer, copy the passages of the text above that your answer rests on, each on "
    "a line of its own that starts with QUOTE: followed by the passage exactly as it is written "
    "there (a line, or part of one)."
)


class Quoted(str):
    """A sub-model's answer (llm_query(..., quotes=True)): `.quotes`, the Locations of the passages
    it quoted (cite() takes each), and `.dropped`, how many quotes were not in its prompt."""

    def __new__(cls, text, quotes, dropped):
        self = str.__new__(cls, text)
        self.quotes, self.dropped = quotes, dropped
        return self


class ChildAnswer(str):
    """A child RLM's answer (rlm_query): its text; `.value`, the dict or list it gave with
    FINAL_VAR (its text is that value as JSON), else None."""

    def __new__(cls, text):
        self = str.__new__(cls, text)
        self.value = None
        if text[:1] in ("{", "["):
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            self.value = value if isinstance(value, (dict, list)) else None
        return self


class Location(tuple):
    """Where locate() found a text: (path, line); `end_line` is the last line the text covers.
    cite() takes it as it is, so `cite(locate(text))` cites every line of the text."""

    def __new__(cls, path, line, end_line):
        self = tuple.__new__(cls, (path, line))
        self.end_line = end_line
        return self

    path = property(lambda self: self[0])
    line = property(lambda self: self[1])

    def __repr__(self):
        end = "-%d" % self.end_line if self.end_line != self.line else ""
        return "%s:%d%s" % (self[0], self[1], end)


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
        self.citations = []  # the spans cite() registered: what the host checks and cuts
        self.cited = {}  # (path, start_line, end_line) -> its marker number
        self.line_counts = {}  # path -> lines, counted on the first cite()

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
            elif op == "citations":
                self.reply({"type": "citations", "spans": self.citations})
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
                index = json.load(f)
            spans = {p: tuple(se) for p, se in index["files"].items()}
            calibrate(index.get("chars_per_token"))
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
            "rlm_query": self.rlm_query,
            "rlm_query_batched": self.rlm_query_batched,
            "FINAL": self.FINAL,
            "FINAL_VAR": self.FINAL_VAR,
            "SHOW_VARS": self.SHOW_VARS,
            "grep": self.grep,
            "count_tokens": count_tokens,
            "cite": self.cite,
            "locate": self.locate,
        }
        self.ns.update(self.reserved)

    def restore_reserved(self):
        restored = [n for n, v in self.reserved.items() if self.ns.get(n) is not v]
        for name in restored:
            self.ns[name] = self.reserved[name]
        return restored

    def llm_query(self, prompt, model=None, quotes=False):
        """Ask a sub-model one question; returns its answer as a string. `quotes=True`: the answer
        also has `.quotes`, the passages of the prompt it rests on as citable (path, line) handles."""
        if not quotes:
            return self.ask_host([prompt], model)[0]
        return self.llm_query_batched([prompt], model, quotes=True)[0]

    def llm_query_batched(self, prompts, model=None, quotes=False):
        """Ask many questions concurrently (on the host); returns answers in order."""
        prompts = list(prompts)
        if not prompts or not quotes:
            return self.ask_host(prompts, model) if prompts else []
        texts = [str(p) for p in prompts]
        replies = self.ask_host([t + QUOTES_NOTE for t in texts], model)
        answers = [self.quoted(texts[i], replies[i]) for i in range(len(texts))]
        dropped = sum(a.dropped for a in answers)
        if dropped:
            print("llm_query: %d quote(s) the sub-model gave are not in its prompt: dropped" % dropped)
        return answers

    def quoted(self, prompt, reply):
        """The reply without its QUOTE: lines, as a Quoted: each quote found verbatim in the prompt
        is snapped to where that text lies in the input; any other is dropped and counted."""
        kept, found, dropped = [], [], 0
        for line in reply.split("\n"):
            m = QUOTE_LINE.match(line)
            if m is None:
                kept.append(line)
                continue
            quote = m.group(1).strip()
            if len(quote) > 1 and quote[0] == quote[-1] and quote[0] in "\"'`":
                quote = quote[1:-1]  # the quote marks some models add around a passage
            where = self.snap(prompt, quote) if quote.strip() else None
            if where is None:
                dropped += 1
            else:
                found.append(where)
        return Quoted("\n".join(kept).strip(), found, dropped)

    def snap(self, prompt, quote):
        """The Location in the input of `quote`, a passage of `prompt`: the prompt's text around it
        (as wide as still occurs in the input) finds the slice the prompt was cut from. None when
        the prompt does not hold the quote, or the input does not."""
        at = prompt.find(quote)
        if at < 0:
            return None
        for pad in (2000, 200, 0):
            left = max(0, at - pad)
            pos = self.context.find(prompt[left : at + len(quote) + pad])
            if pos >= 0:
                start = pos + at - left
                found = self.location(start, start + len(quote))
                if found is not None:
                    return found
        return None

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

    def rlm_query(self, query, context=None, model=None):
        """Ask a child RLM: a fresh root model with its own REPL in this sandbox, whose `context` is
        `context` (a string, e.g. a slice), or this whole input when None. Returns its final answer
        as a string (a dict or list it gave with FINAL_VAR also as `.value`); a child that fails
        returns an error string. Past the run's --max-depth it is an llm_query of the query (and
        the context, when given)."""
        return self.rlm_query_batched([query], None if context is None else [context], model)[0]

    def rlm_query_batched(self, queries, contexts=None, model=None):
        """Many child RLMs, run concurrently on the host (at most --max-children at once); their
        answers in order. `contexts`: None (each child gets this whole input) or one per query."""
        queries = [str(q) for q in queries]
        if contexts is None:
            contexts = [None] * len(queries)
        contexts = [None if c is None else str(c) for c in contexts]
        if len(contexts) != len(queries):
            raise ValueError("rlm_query_batched: %d queries but %d contexts" % (len(queries), len(contexts)))
        if len(queries) > MAX_PROMPTS:
            raise ValueError(
                "%d queries in one call; at most %d: split the batch" % (len(queries), MAX_PROMPTS)
            )
        if not queries:
            return []
        frame = {"type": "rlm_query", "queries": queries, "contexts": contexts}
        try:
            return [ChildAnswer(answer) for answer in self.exchange(frame, model)]
        except FrameTooLarge as exc:
            raise ValueError(
                "the contexts of one call are too large to send (%s): pass smaller slices" % exc
            ) from None

    def exchange(self, prompts, model):
        """One llm_query frame (or, given a dict, that rlm_query frame) to the host, and its reply."""
        with self.lock:
            # Time spent waiting for the host's model calls is not the cell's: pause the cell timer.
            remaining = signal.setitimer(signal.ITIMER_REAL, 0)[0]
            try:
                self.next_id += 1
                ident = self.next_id
                if isinstance(prompts, dict):
                    self.channel.send(dict(prompts, id=ident, model=model))
                else:
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

    # ---------- evidence: cite() and locate() ----------

    def cite(self, where, start_line=None, end_line=None):
        """Register a span of the input as evidence; returns its marker, e.g. "[3]", to put in the
        answer. `where`: a grep match, a locate() result, a (path, line) pair, a path, or "path:N"
        / "path:N-M". The host cuts the cited lines from the input itself: nothing typed here is
        ever shown as a quote."""
        path, line, last = self.where(where)
        if start_line is None and end_line is None and line is None:
            start, end = 1, self.lines_of(path)  # a bare path: the whole file
        else:
            start = int(start_line) if start_line is not None else (line if line is not None else 1)
            end = int(end_line) if end_line is not None else (last if start_line is None and last else start)
        lines = self.lines_of(path)
        if not 1 <= start <= end <= max(lines, 1):
            raise ValueError(
                "cite: lines %d-%d are not in %s, which has %d line(s)" % (start, end, path, lines)
            )
        key = (path, start, end)
        if key in self.cited:
            return "[%d]" % self.cited[key]
        if len(self.citations) >= MAX_CITATIONS:
            raise ValueError("cite: at most %d citations per run" % MAX_CITATIONS)
        base = self.spans[path][0]
        first = self.line_offset(path, start)
        stop = self.line_offset(path, end + 1) if end < lines else self.spans[path][1]
        for terminator in "\n\r":  # the span ends with its last line, not the CRLF or LF after it
            if stop > first and self.context[stop - 1] == terminator:
                stop -= 1
        byte_start = utf8_len(self.context, base, first)
        marker = len(self.citations) + 1
        self.cited[key] = marker
        self.citations.append(
            {
                "marker": marker,
                "path": path,
                "start_line": start,
                "end_line": end,
                "byte_start": byte_start,
                "byte_end": byte_start + utf8_len(self.context, first, stop),
            }
        )
        return "[%d]" % marker

    def locate(self, text, path=None):
        """Where `text` occurs in the input (or in one file): a (path, line) pair, or None.
        Tried verbatim first, then with any run of whitespace matching any other."""
        text = str(text)
        if not text.strip():
            return None
        start, end = (0, len(self.context)) if path is None else self.spans[self.resolve_path(path)]
        pos = start
        while True:  # verbatim, skipping `==> path <==` header lines
            at = self.context.find(text, pos, end)
            if at < 0:
                break
            found = self.location(at, at + len(text))
            if found is not None:
                return found
            pos = at + 1
        pattern = r"\s+".join(re.escape(word) for word in text.split())
        for m in re.compile(pattern).finditer(self.context, start, end):
            found = self.location(m.start(), m.end())
            if found is not None:
                return found
        return None

    def location(self, at, stop):
        """The Location of context[at:stop], or None when it is not inside one file."""
        if not self.paths:
            return None
        idx = bisect_right(self.starts, at) - 1
        if idx < 0:
            return None
        path = self.paths[idx]
        base, end = self.spans[path]
        if stop > end:
            return None
        line = self.context.count("\n", base, at) + 1
        return Location(path, line, line + self.context.count("\n", at, max(at, stop - 1)))

    def where(self, where):
        """(path, line or None, last line or None) of what cite() was given."""
        if isinstance(where, Location):
            return self.resolve_path(where[0]), int(where[1]), int(where.end_line)
        if isinstance(where, (tuple, list)) and len(where) >= 2 and isinstance(where[1], int):
            return self.resolve_path(where[0]), int(where[1]), None
        if isinstance(where, str):
            m = re.match(r"^(.*?):(\d+)(?:-(\d+))?$", where)
            if m and self.known_path(m.group(1)):
                last = int(m.group(3)) if m.group(3) else None
                return self.resolve_path(m.group(1)), int(m.group(2)), last
            return self.resolve_path(where), None, None
        raise TypeError(
            "cite: give a grep match, a locate() result, a (path, line) pair or a path, not %s"
            % type(where).__name__
        )

    def known_path(self, path):
        try:
            self.resolve_path(path)
            return True
        except ValueError:
            return False

    def resolve_path(self, path):
        """A loaded file's path: as given, `-` for stdin, or the unique file it ends with."""
        path = str(path)[:MAX_PATH_CHARS]
        if path in self.spans:
            return path
        if path in STDIN_NAMES:
            stdin = [p for p in self.spans if p == "<stdin>"]
            if stdin:
                return stdin[0]
        tail = path[2:] if path.startswith("./") else path
        ends = [p for p in self.spans if p == tail or p.endswith("/" + tail)]
        if len(ends) == 1:
            return ends[0]
        if ends:
            shown = ", ".join(ends[:5])
            raise ValueError("cite: %r matches %d files (%s); give the full path" % (path, len(ends), shown))
        some = ", ".join(list(self.spans)[:5]) + (", ..." if len(self.spans) > 5 else "")
        raise ValueError("cite: %r is not a loaded file (files: %s)" % (path, some))

    def lines_of(self, path):
        if path not in self.line_counts:
            start, end = self.spans[path]
            tail = 1 if end > start and self.context[end - 1] != "\n" else 0
            self.line_counts[path] = self.context.count("\n", start, end) + tail
        return self.line_counts[path]

    def line_offset(self, path, line):
        """The offset in `context` where `line` (1-based) of `path` starts."""
        pos = self.spans[path][0]
        for _ in range(line - 1):
            pos = self.context.find("\n", pos) + 1
        return pos


def utf8_len(text, start, stop, chunk=1 << 20):
    """Bytes of text[start:stop] in UTF-8, a chunk at a time (no copy of a whole file)."""
    return sum(
        len(text[i : min(i + chunk, stop)].encode("utf-8", "replace")) for i in range(start, stop, chunk)
    )


def describe(exc):
    """`Type: message` of an exception whose own __str__ may fail."""
    try:
        message = str(exc)
    except Exception:
        message = "(its message could not be shown)"
    return "%s: %s" % (type(exc).__name__, message) if message else type(exc).__name__


def json_text(value):
    """A dict or list as JSON text, or None when JSON cannot hold it (a set, an object, NaN, a
    cycle): then its str() is the answer, as for any other value."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def answer_text(value, what):
    """The answer as a plain str (a dict or list as JSON). A value without a text form (str()
    raises, a 5,000-digit int) or one too long to send is a ValueError in the cell, so the model
    sees it and the REPL lives."""
    try:
        text = json_text(value) if isinstance(value, (dict, list)) else None  # --schema parses it
        text = str.__str__(str(value)) if text is None else text  # an exact str: a subclass could lie
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


# Characters per token of the loaded context by the host's tokenizer (rlmcli/tokens.py, o200k_base),
# sent in the index as "chars_per_token": there is no tokenizer here. count_tokens(context) is the
# host's count within 1%; a part of the context is off by as much as its text is denser or sparser
# than the whole (10,000-character slices of loghub's logs: mostly within 10%, 30% at worst).
CHARS_PER_TOKEN = 4.0


def calibrate(ratio):
    global CHARS_PER_TOKEN
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0.5 <= ratio <= 100:
        CHARS_PER_TOKEN = float(ratio)


def count_tokens(text):
    """Estimated tokens of a string: its characters / the context's characters per token."""
    return max(1, int(round(len(str(text)) / CHARS_PER_TOKEN))) if text else 0


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
    if any(arg == "--child" or arg.startswith("--child=") for arg in sys.argv[1:]):
        # A child RLM's server: its own session and process group, so the host can end it and
        # everything its cells started without touching the other servers of the sandbox.
        try:
            os.setsid()
        except OSError:  # started as a session leader already (the host's start_new_session)
            pass
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
