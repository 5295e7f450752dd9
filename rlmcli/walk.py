"""The directory walk behind `rlm ask DIR`: sorted, never following symlinks, applying git's ignore
rules (.gitignore, .ignore, .rlmignore, .git/info/exclude) and the hidden/include/exclude filters.

Every entry left out is recorded under its reason (see context.SKIP_REASONS), so the context summary
can say what was skipped and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pathspec

from .errors import InputError

if TYPE_CHECKING:  # context imports this module at run time, so only the type checker looks back
    from .context import LoadOptions

IGNORE_FILES = (".gitignore", ".ignore", ".rlmignore")  # later files override earlier ones


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
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
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
        self.prefix = shown if shown.endswith("/") else shown + "/"
        self.options = options
        self.skipped = skipped
        self.include = pathspec.GitIgnoreSpec.from_lines(options.include) if options.include else None
        self.exclude = pathspec.GitIgnoreSpec.from_lines(options.exclude) if options.exclude else None

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
            rel = rel_dir + entry.name
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
