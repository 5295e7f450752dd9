"""The one token counter of rlm: tiktoken's `o200k_base` (GPT-4o's encoding), loaded offline from
the copy litellm ships in litellm/litellm_core_utils/tokenizers/ (litellm points tiktoken there
itself in litellm_core_utils/default_encoding.py; we find the folder without importing litellm,
which takes seconds).

Counts are exact for texts up to SAMPLE_CHARS x SAMPLES characters (1 MiB); a larger text or file
is counted on SAMPLES evenly spaced slices and scaled by its size, and said to be an estimate. So
counting costs at most about 1 MiB of tokenizing, whatever the size. Measured on this machine
(tiktoken 0.14, one core): 6-8 million characters a second on log text; a 100 MB log counted in
~0.15 s (docs/PERFORMANCE.md, benchmarks/token_count.py). Models that tokenize differently (Claude,
Gemini, Llama) come within ~10-20% of these figures.

Loading the encoding costs once per process. Parsed from litellm's file it took ~1.0 s of CPU on
this 2-CPU machine (tiktoken's import 0.08 s, parsing 200K base64 ranks in pure Python ~0.5 s,
building the Rust CoreBPE ~0.35 s). So the parsed ranks are kept in rlm's cache dir (marshal, ~0.1 s
to read; keyed on litellm's file, see _cache_file): ~0.65 s of CPU against ~1.0 s, measured in fresh
processes side by side (benchmarks/token_count.py). The rest is CoreBPE's build, which holds the GIL
(tiktoken 0.14): a thread cannot hide it behind the main thread's own CPU work (imports, settings).
So `rlm ask` loads it only once its first model request is out (model/client.py starts preload
then), while it waits for the reply: nothing before that request counts tokens (the first prompt
states characters and lines, the context is counted in run.py's before_start, the request's size is
bounded by its bytes). `rlm files` starts the load on a thread as the input is read, where the main
thread may wait for a pipe or a disk.

Should the encoding file be missing (a litellm that stopped shipping it), counts fall back to
characters / 4, marked estimated: tiktoken would otherwise try to download it, and rlm runs offline.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib.util
import marshal
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # tiktoken is imported on first use: `rlm --help` never loads it
    import tiktoken

ENCODING = "o200k_base"
# tiktoken caches an encoding under the sha1 of the URL it comes from; litellm ships that file.
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
SAMPLES = 64
SAMPLE_CHARS = 16 * 1024  # per slice: in bytes for files, characters for strings
EXACT_CHARS = SAMPLES * SAMPLE_CHARS  # up to this size a text is counted whole
FALLBACK_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    estimated: bool  # counted on a sample (or without the tokenizer) and scaled


def tokenizers_dir() -> Path | None:
    """litellm's folder of tokenizer files, found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"


# The loaded encoding, once known (None: litellm's file is missing). Loading happens under _lock,
# in whichever thread asks first: preload's thread or encoding()'s caller; never twice.
_lock = threading.Lock()
_loaded = False
_encoding: tiktoken.Encoding | None = None
_preloader: threading.Thread | None = None
# The cache file: this line, the payload's sha256, then the payload (marshal: the fastest to read
# back that we measured, ~0.1 s; trusted as the user's own files are, the digest is against damage).
CACHE_FORMAT = b"rlm-tiktoken-ranks 1\n"
STALE_CACHE_S = 7 * 86400
STALE_TEMP_S = 3600


def loaded() -> bool:
    """Whether encoding() answers at once: the encoding is loaded (or known to be missing)."""
    return _loaded


def preload() -> None:
    """Start loading the encoding on a daemon thread; encoding() then waits for it (or finds it
    loaded). It pays off while the main thread waits (a pipe on stdin, a cold disk, Docker): the
    load is CPU work that holds the GIL (tiktoken 0.14 builds its CoreBPE without releasing it), so
    it does not overlap the main thread's own CPU work, such as imports."""
    global _preloader
    with _lock:
        if _loaded or _preloader is not None:
            return
        _preloader = threading.Thread(target=_load_quietly, name="rlm-tokenizer", daemon=True)
        _preloader.start()


def _load_quietly() -> None:
    try:
        encoding()
    except Exception:  # noqa: BLE001 - encoding() in the caller's thread tries again and raises as ever
        pass


def encoding() -> tiktoken.Encoding | None:
    """o200k_base from litellm's copy; None when that copy is missing (never a download)."""
    global _loaded, _encoding
    if _loaded:
        return _encoding
    with _lock:
        if _loaded:  # loaded while this thread waited (preload's thread)
            return _encoding
        enc, parsed = _load()
        _encoding, _loaded = enc, True
    if parsed is not None:  # parsed: kept for the next process (after the lock: nobody waits on it)
        _write_cache(*parsed)
    return enc


def reset() -> None:
    """Forget the loaded encoding, after any preload has ended (tests: the next encoding() loads
    it again, as they set it up)."""
    global _loaded, _encoding, _preloader
    if _preloader is not None:
        _preloader.join()
    with _lock:
        _loaded, _encoding, _preloader = False, None, None


def _load() -> tuple[tiktoken.Encoding | None, tuple[Path, dict] | None]:
    """(the encoding, (the cache file, the constructor's arguments) when they were parsed)."""
    folder = tokenizers_dir()
    source = None if folder is None else folder / hashlib.sha1(ENCODING_URL.encode()).hexdigest()
    if source is None or not source.is_file():
        return None, None
    import tiktoken

    cached = _cache_file(source)
    args = _read_cache(cached) if cached is not None else None
    if args is not None:
        try:
            return tiktoken.Encoding(**args), None
        except Exception:  # noqa: BLE001 - a cache that does not fit this tiktoken: parse as below
            pass
    if os.environ.get("TIKTOKEN_CACHE_DIR") != str(folder):
        # What litellm sets on import (litellm_core_utils/default_encoding.py), so both agree.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS

    args = ENCODING_CONSTRUCTORS[ENCODING]()  # what tiktoken.get_encoding builds the Encoding from
    return tiktoken.Encoding(**args), (None if cached is None else (cached, args))


def cache_dir() -> Path:
    """rlm's cache dir: `RLM_HOME`/cache when RLM_HOME is set (as the history follows it), else the
    user cache dir (the parsed ranks can always be made again)."""
    if os.environ.get("RLM_HOME"):
        return Path(os.environ["RLM_HOME"]) / "cache"
    import platformdirs

    return platformdirs.user_cache_path("rlm")


def _cache_file(source: Path) -> Path | None:
    """The cache of `source`'s parsed ranks: named by what would change them (the file's path, size
    and mtime, so another litellm copy has its own; tiktoken's and Python's versions)."""
    try:
        stat = source.stat()
        import tiktoken

        key = f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{tiktoken.__version__}|{sys.version_info[:2]}"
        return cache_dir() / f"{ENCODING}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.marshal"
    except Exception:  # noqa: BLE001 - no cache is never fatal
        return None


def _read_cache(path: Path) -> dict | None:
    """The constructor's arguments from the cache; None when missing, corrupt or not what we wrote."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head, digest = len(CACHE_FORMAT), len(CACHE_FORMAT) + 32
    if data[:head] != CACHE_FORMAT or hashlib.sha256(data[digest:]).digest() != data[head:digest]:
        return None  # a digest costs ~3 ms: a file cut or altered is parsed again, never trusted
    try:
        args = marshal.loads(data[digest:])
    except (ValueError, EOFError, TypeError):
        return None
    ok = isinstance(args, dict) and args.get("name") == ENCODING and isinstance(args.get("pat_str"), str)
    ok = ok and isinstance(args.get("mergeable_ranks"), dict) and isinstance(args.get("special_tokens"), dict)
    return args if ok else None


def _write_cache(path: Path, args: dict) -> None:
    """Write atomically (a temp file, then os.replace): a reader sees the old file or the new one.
    Never fatal: a run does not need the cache."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        payload = marshal.dumps(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(CACHE_FORMAT + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
        # Caches of other litellm copies unwritten for a week (two installs in use keep theirs), and
        # temp files of a process that ended mid-write.
        for old in [*path.parent.glob(f"{ENCODING}-*.marshal"), *path.parent.glob(f".{ENCODING}-*.tmp")]:
            age = time.time() - old.stat().st_mtime
            if old != path and age > (STALE_CACHE_S if old.suffix == ".marshal" else STALE_TEMP_S):
                old.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - unwritable dir, full disk: the next process parses again
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _count_all(texts: list[str]) -> int:
    enc = encoding()
    if enc is None:
        return sum(-(-len(t) // FALLBACK_CHARS_PER_TOKEN) for t in texts)
    if len(texts) == 1:
        return len(enc.encode_ordinary(texts[0]))
    return sum(len(tokens) for tokens in enc.encode_ordinary_batch(texts))


def count_text(text: str) -> TokenCount:
    """Tokens in `text`: exact up to EXACT_CHARS characters, else estimated from SAMPLES slices."""
    if len(text) <= EXACT_CHARS:
        return TokenCount(_count_all([text]) if text else 0, encoding() is None)
    step = len(text) / SAMPLES
    slices = [text[int(i * step) : int(i * step) + SAMPLE_CHARS] for i in range(SAMPLES)]
    return TokenCount(_scale(_count_all(slices), sum(map(len, slices)), len(text)), True)


def count_file(path: Path, chars: int) -> TokenCount:
    """Tokens in a UTF-8 file of `chars` characters (decoded as the REPL decodes it, invalid bytes
    as U+FFFD): exact up to EXACT_CHARS bytes, else estimated from SAMPLES slices spread evenly."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= EXACT_CHARS:
            text = f.read().decode("utf-8", "replace")
            return TokenCount(_count_all([text]) if text else 0, encoding() is None)
        slices = file_slices(f, size)
    return count_slices([text for _, text in slices], chars)


def file_slices(f: BinaryIO, size: int) -> list[tuple[bytes, str]]:
    """SAMPLES slices of SAMPLE_CHARS bytes spread evenly over an open file of `size` bytes: (the
    bytes decoded, their text), the partial characters at either end left out."""
    step = size / SAMPLES
    out = []
    for i in range(SAMPLES):
        f.seek(int(i * step))
        data = f.read(SAMPLE_CHARS)
        start = 0
        while start < min(len(data), 4) and data[start] & 0xC0 == 0x80:  # continuation bytes
            start += 1
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(data[start:])  # not final: a character cut at the end stays out
        held = decoder.getstate()[0]
        out.append((data[start : len(data) - len(held)], text))
    return out


def most_in_file(path: Path, chars: int) -> int:
    """The most count_file(path, chars) can say, without the tokenizer (no o200k token is shorter
    than a byte, and the fallback counts fewer): the UTF-8 bytes of the text it would count, scaled
    as it scales a sample. Costs a read of at most EXACT_CHARS bytes (milliseconds)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= EXACT_CHARS:
            return len(f.read().decode("utf-8", "replace").encode())
        texts = [text for _, text in file_slices(f, size)]
    sampled = sum(map(len, texts))
    return -(-sum(len(t.encode()) for t in texts) * chars // sampled) if sampled else 0


def count_slices(texts: list[str], chars: int) -> TokenCount:
    """Tokens in a text of `chars` characters, scaled from these slices of it (an estimate)."""
    return TokenCount(_scale(_count_all(texts), sum(map(len, texts)), chars), True)


def _scale(tokens: int, sampled_chars: int, chars: int) -> int:
    return round(tokens * chars / sampled_chars) if sampled_chars else 0


def chars_per_token(chars: int, tokens: int) -> float:
    """The ratio the REPL's count_tokens divides by (calibrated on the context it holds)."""
    return chars / tokens if chars and tokens else float(FALLBACK_CHARS_PER_TOKEN)
