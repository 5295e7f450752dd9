"""The directory walk behind `rlm ask DIR`: sorted, never following symlinks, applying the ignore
rules as ripgrep does (ignore_rules.py: .gitignore files up to the repository root, .ignore,
.rlmignore, .git/info/exclude, the global git excludes file) and the hidden/include/exclude filters.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .ignore_rules import IGNORE_FILES as IGNORE_FILES  # re-exported: context.py names it
from .ignore_rules import Rules, compile_spec, rules_above


@dataclass
class LoadOptions:
    include: list[str] = field(default_factory=list)  # -g globs as rg: files must match one; "!glob" skips
    exclude: list[str] = field(default_factory=list)  # gitignore-style; files and dirs skipped
    no_ignore: bool = False  # apply no ignore file (ignore_rules.py)
    hidden: bool = False  # include dot entries (".git" is always skipped)
    max_file_size: int = 10 * 1024 * 1024  # applies to files found in directories only
    redact_secrets: bool = False  # replace possible secrets in the context (secrets_scan.py)


def display_name(name: str) -> str:
    """A name from the OS as text: the lone surrogates os.fsdecode (and sys.argv) make of bytes
    that are not UTF-8 become `\\xNN`. Valid text comes back unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Walker:
    """Sorted, symlink-free directory walk applying ignore rules, hidden/include/exclude filters."""

    def __init__(self, root: Path, shown: str, options: LoadOptions, skipped: dict[str, list[str]]):
        self.root = root
        shown = display_name(shown)
        self.prefix = shown if shown.endswith("/") else shown + "/"
        self.options = options
        self.skipped = skipped
        # -g/--include globs as ripgrep reads them: "!glob" excludes, a plain glob admits files,
        # the last matching one decides. Flipped into gitignore lines (a plain line ignores).
        globs = [display_name(g) for g in options.include]
        self.globs = compile_spec(g[1:] if g.startswith("!") else "!" + g for g in globs) if globs else None
        self.admit_only = any(not g.startswith("!") for g in globs)  # files must match a plain glob
        excludes = [display_name(g) for g in options.exclude]
        self.exclude = compile_spec(excludes) if excludes else None
        # Paths are matched against ignore rules from the anchor: the repository root when the
        # walk starts inside a git work tree (the parents' .gitignore files apply), else the root.
        self.rules, self.anchor = (Rules(), "") if options.no_ignore else rules_above(root, display_name)

    def skip(self, reason: str, display: str) -> None:
        self.skipped.setdefault(reason, []).append(display)

    def files(self) -> Iterator[tuple[str, Path]]:
        """Yield (display path, filesystem path) of each candidate file, in sorted order."""
        yield from self._walk(self.root, "", self.rules)

    def _glob_verdict(self, match_path: str) -> bool | None:
        """-g's verdict: True excluded by a "!glob", False admitted by a glob, None: no glob matched."""
        return self.globs.check_file(match_path).include if self.globs else None

    def _walk(self, path: Path, rel_dir: str, rules: Rules) -> Iterator[tuple[str, Path]]:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            if not rel_dir:  # the directory argument itself
                raise InputError(f"cannot read directory {self.prefix}: {e.strerror or e}") from e
            self.skip("unreadable", self.prefix + rel_dir)
            return
        if not self.options.no_ignore:
            repository_root = any(e.name == ".git" for e in entries)
            rules = rules.enter(path, self.anchor + rel_dir, repository_root)
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
            verdict = self._glob_verdict(match_path)
            if rules and rules.ignored(self.anchor + match_path):
                self.skip("ignored", display)
            elif verdict is True or (self.exclude and self.exclude.match_file(match_path)):
                self.skip("excluded", display)
            elif entry.name.startswith(".") and not self.options.hidden:
                self.skip("hidden", display)
            elif is_link:  # never followed: no escaping the tree, no loops
                self.skip("symlink", display)
            elif is_dir:
                yield from self._walk(Path(entry.path), match_path, rules)
            elif not is_file:  # FIFO, socket, device: opening a FIFO would block
                self.skip("special", display)
            elif self.admit_only and verdict is not False:  # no plain -g glob admits it
                self.skip("excluded", display)
            elif size > self.options.max_file_size:
                self.skip("too-large", display)
            else:
                yield display, Path(entry.path)
