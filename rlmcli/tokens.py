"""The one token counter of rlm: tiktoken's `o200k_base` (GPT-4o's encoding), loaded offline from
the copy litellm ships in litellm/litellm_core_utils/tokenizers/ (litellm points tiktoken there
itself in litellm_core_utils/default_encoding.py; we find the folder without importing litellm,
which takes seconds).

Counts are exact for texts up to SAMPLE_CHARS x SAMPLES characters (1 MiB); a larger text or file
is counted on SAMPLES evenly spaced slices and scaled by its size, and said to be an estimate. So
counting costs at most about 1 MiB of tokenizing, whatever the size. Measured on this machine
(tiktoken 0.14, one core): loading the encoding 0.4 s once per process; 6-8 million characters a
second on log text; a 100 MB log counted in ~0.15 s (docs/PERFORMANCE.md, benchmarks/token_count.py).
Models that tokenize differently (Claude, Gemini, Llama) come within ~10-20% of these figures.

Should the encoding file be missing (a litellm that stopped shipping it), counts fall back to
characters / 4, marked estimated: tiktoken would otherwise try to download it, and rlm runs offline.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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


_lock = threading.Lock()


@functools.cache
def encoding() -> tiktoken.Encoding | None:
    """o200k_base from litellm's copy; None when that copy is missing (never a download)."""
    folder = tokenizers_dir()
    if folder is None or not (folder / hashlib.sha1(ENCODING_URL.encode()).hexdigest()).is_file():
        return None
    with _lock:
        # What litellm sets on import (litellm_core_utils/default_encoding.py), so both agree.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        import tiktoken

        return tiktoken.get_encoding(ENCODING)


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
        step = size / SAMPLES
        slices = []
        for i in range(SAMPLES):
            f.seek(int(i * step))
            slices.append(_decode_slice(f.read(SAMPLE_CHARS)))
    return TokenCount(_scale(_count_all(slices), sum(map(len, slices)), chars), True)


def _decode_slice(data: bytes) -> str:
    """A slice cut anywhere in UTF-8: the partial characters at either end are dropped."""
    start = 0
    while start < min(len(data), 4) and data[start] & 0xC0 == 0x80:  # continuation bytes
        start += 1
    # Not final: a character cut at the end stays in the decoder's buffer, left out.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data[start:])


def _scale(tokens: int, sampled_chars: int, chars: int) -> int:
    return round(tokens * chars / sampled_chars) if sampled_chars else 0


def chars_per_token(chars: int, tokens: int) -> float:
    """The ratio the REPL's count_tokens divides by (calibrated on the context it holds)."""
    return chars / tokens if chars and tokens else float(FALLBACK_CHARS_PER_TOKEN)
