"""The directory walk behind `rlm ask DIR`: sorted, never following symlinks, applying git's ignore
rules (.gitignore, .ignore, .rlmignore, .git/info/exclude) and the hidden/include/exclude filters.

Every entry left out is recorded under its reason (see context.SKIP_REASONS), so the context summary
can say what was skipped and why.

Names are shown as text (`display_name`): the bytes of a name that is not UTF-8 are written as
`\\xNN`, e.g. `caf\\xe9.txt`. That form is the file's path everywhere rlm shows or records it (the
context's headers, `files`, the index, the trace, the history) and what ignore rules match; the
file is opened by its real name. A name that really contains the four characters `\\xe9` looks
the same: the display path is for people and the model, never for opening.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
import re2
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from .errors import InputError


@dataclass
class LoadOptions:
    include: list[str] = field(default_factory=list)  # gitignore-style; files must match one
    exclude: list[str] = field(default_factory=list)  # gitignore-style; files and dirs skipped
    no_ignore: bool = False  # don't read .gitignore/.ignore/.rlmignore/.git/info/exclude
    hidden: bool = False  # include dot entries (".git" is always skipped)
    max_file_size: int = 10 * 1024 * 1024  # applies to files found in directories only


IGNORE_FILES = (".gitignore", ".ignore", ".rlmignore")  # later files override earlier ones


def display_name(name: str) -> str:
    """A name from the OS as text: the lone surrogates os.fsdecode (and sys.argv) make of bytes
    that are not UTF-8 become `\\xNN`. Valid text comes back unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# pathspec turns each pattern into a Python regex, and Python's engine backtracks: every `*` is a
# `[^/]*`, so `a*a*...a*b` (20 stars) against a name of n "a"s tries ~C(n, 20) splits. Measured
# with pathspec 1.1: 22 characters 0.04 s, 24 0.1 s, 26 0.39 s (x2 per character: 60 would take
# ~10^10 s). RE2 matches in time linear in the name (the same pattern, 200 characters: 0.2 ms) but
# costs ~1.6 us a match against ~0.2 us, so only patterns with two or more runs of `*` (`**` is one
# run) use it; with one run Python's engine stays polynomial and fast (4,000-character paths:
# under 1 ms).
LINEAR_FROM_STARS = 2
_STAR_RUN = re.compile(r"\*+")


class _Pattern(GitIgnoreSpecPattern):
    """pathspec's gitignore pattern; matched with RE2 when it has LINEAR_FROM_STARS runs of `*`."""

    def __init__(self, pattern: str, include: bool | None = None):
        super().__init__(pattern, include)
        if self.regex is not None and len(_STAR_RUN.findall(pattern)) >= LINEAR_FROM_STARS:
            try:
                self.regex = re2.compile(self.regex.pattern)
            except re2.error:  # beyond RE2's size budget: dropped, as git drops a pattern it can't parse
                self.regex, self.include = None, None


def compile_spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """A gitignore spec of `lines`, matched pattern by pattern (RE2's set matcher has a size
    budget that a long ignore file exceeds). Paths given to it must be display names: RE2 takes
    UTF-8, which lone surrogates are not."""
    return pathspec.GitIgnoreSpec.from_lines(list(lines), _Pattern, backend="simple")


def _ignore_spec(*files: Path) -> pathspec.GitIgnoreSpec | None:
    """One spec from several ignore files; lines of later files override earlier ones."""
    lines: list[str] = []
    for path in files:
        if not path.is_file():  # absent, or a FIFO/dir named like an ignore file: don't block on it
            continue
        try:
            lines += path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError:  # an unreadable ignore file: git silently skips it too
            continue
    spec = compile_spec(lines)
    return spec if len(spec) else None


# One ignore layer: (directory relative to the walk root, "" or ending in "/", its spec).
_Layer = tuple[str, pathspec.GitIgnoreSpec]


def _ignored(layers: list[_Layer], rel: str) -> bool:
    """Git precedence: the deepest directory with a matching rule decides; within a spec the
    last matching line wins (that's what check_file reports, negations included)."""
    for base, spec in reversed(layers):
        result = spec.check_file(rel[len(base) :])
        if result.include is not None:
            return result.include
    return False


class Walker:
    """Sorted, symlink-free directory walk applying ignore rules, hidden/include/exclude filters."""

    def __init__(self, root: Path, shown: str, options: LoadOptions, skipped: dict[str, list[str]]):
        self.root = root
        shown = display_name(shown)
        self.prefix = shown if shown.endswith("/") else shown + "/"
        self.options = options
        self.skipped = skipped
        globs = [display_name(g) for g in options.include], [display_name(g) for g in options.exclude]
        self.include = compile_spec(globs[0]) if globs[0] else None
        self.exclude = compile_spec(globs[1]) if globs[1] else None

    def skip(self, reason: str, display: str) -> None:
        self.skipped.setdefault(reason, []).append(display)

    def files(self) -> Iterator[tuple[str, Path]]:
        """Yield (display path, filesystem path) of each candidate file, in sorted order."""
        layers: list[_Layer] = []
        if not self.options.no_ignore and (self.root / ".git").is_dir():
            # Lowest precedence, below every .gitignore, as in git.
            if spec := _ignore_spec(self.root / ".git" / "info" / "exclude"):
                layers.append(("", spec))
        yield from self._walk(self.root, "", layers)

    def _walk(self, path: Path, rel_dir: str, layers: list[_Layer]) -> Iterator[tuple[str, Path]]:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            if not rel_dir:  # the directory argument itself
                raise InputError(f"cannot read directory {self.prefix}: {e.strerror or e}") from e
            self.skip("unreadable", self.prefix + rel_dir)
            return
        if not self.options.no_ignore and (spec := _ignore_spec(*(path / n for n in IGNORE_FILES))):
            layers = [*layers, (rel_dir, spec)]
        for entry in entries:
            if entry.name == ".git":  # never descend, never report: it's never what the user means
                continue
            rel = rel_dir + display_name(entry.name)  # matched and shown as text (module docstring)
            display = self.prefix + rel
            try:
                is_link = entry.is_symlink()
                is_dir = not is_link and entry.is_dir(follow_symlinks=False)
                is_file = not is_link and entry.is_file(follow_symlinks=False)
                size = entry.stat(follow_symlinks=False).st_size if is_file else 0
            except OSError:
                self.skip("unreadable", display)
                continue
            # Directory patterns ("build/") only match paths written with a trailing slash.
            match_path = rel + "/" if is_dir else rel
            if is_dir:
                display += "/"
            if layers and _ignored(layers, match_path):
                self.skip("ignored", display)
            elif self.exclude and self.exclude.match_file(match_path):
                self.skip("excluded", display)
            elif entry.name.startswith(".") and not self.options.hidden:
                self.skip("hidden", display)
            elif is_link:  # never followed: no escaping the tree, no loops
                self.skip("symlink", display)
            elif is_dir:
                yield from self._walk(Path(entry.path), match_path, layers)
            elif not is_file:  # FIFO, socket, device: opening a FIFO would block
                self.skip("special", display)
            elif self.include and not self.include.match_file(rel):
                self.skip("excluded", display)
            elif size > self.options.max_file_size:
                self.skip("too-large", display)
            else:
                yield display, Path(entry.path)
