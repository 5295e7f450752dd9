"""Which ignore rules apply to a path, read the way ripgrep reads them.

Inside a git work tree (a directory with `.git`, or below one), these apply, highest precedence first:
`.rlmignore`, then `.ignore`, then `.gitignore` files, then the repository's `.git/info/exclude`,
then the user's global excludes file (`core.excludesFile` in `~/.gitconfig` or
`$XDG_CONFIG_HOME/git/config`, else `$XDG_CONFIG_HOME/git/ignore`, `~/.config/git/ignore` when
XDG_CONFIG_HOME is unset). A match in a higher kind decides, whatever its depth; within one kind the
deepest directory with a matching rule decides, and within one file the last matching line (as in
ripgrep's `ignore` crate). Ignore files of the directories above the one given, up to the
repository root, apply too, each anchored where it lives; a nested repository starts git's rules
afresh. Outside a git tree only the ignore files of the directories walked apply, `.gitignore`
included (rlm always read them; ripgrep reads `.gitignore` only in a repository).

A pattern matches a path itself, never its descendants by way of a directory: the walk never enters
an ignored directory, so this only matters for the directories above the walk root. As in ripgrep,
`rlm ask proj/build/` reads the files of a directory that `proj/.gitignore` lists as `build`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
import re2
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

IGNORE_FILES = (".gitignore", ".ignore", ".rlmignore")  # the files read in every directory
# Precedence, highest first. The last three are git's and apply only in a git work tree (and
# `.gitignore` outside one, in the directories walked: see the module docstring).
KINDS = (".rlmignore", ".ignore", ".gitignore", "exclude", "global")
GIT_KINDS = (".gitignore", "exclude", "global")

# pathspec turns each pattern into a Python regex, and Python's engine backtracks: every `*` is a
# `[^/]*`, so `a*a*...a*b` (20 stars) against a name of n "a"s tries ~C(n, 20) splits. Measured
# with pathspec 1.1: 22 characters 0.04 s, 24 0.1 s, 26 0.39 s (x2 per character: 60 would take
# ~10^10 s). RE2 matches in time linear in the name (the same pattern, 200 characters: 0.2 ms) but
# costs ~1.6 us a match against ~0.2 us, so only patterns with two or more runs of `*` (`**` is one
# run) use it; with one run Python's engine stays polynomial and fast (4,000-character paths:
# under 1 ms).
LINEAR_FROM_STARS = 2
_STAR_RUN = re.compile(r"\*+")
# How pathspec 1.x ends a pattern's regex: "the path, or a directory and anything below it" and
# "a directory and anything below it". A trailing `/**` ends in "/" and matches what is below.
_FILE_OR_DIR_END = "(?:(?P<ps_d>/)|$)"
_DIR_END = "(?P<ps_d>/)"


def _self_only(regex: str) -> str:
    """The regex matching the path itself only: a file, or a directory (written with its "/")."""
    if regex.endswith(_FILE_OR_DIR_END):
        return regex[: -len(_FILE_OR_DIR_END)] + "(?P<ps_d>/)?$"
    if regex.endswith(_DIR_END):
        return regex + "$"
    return regex


class _Pattern(GitIgnoreSpecPattern):
    """pathspec's gitignore pattern; matched with RE2 when it has LINEAR_FROM_STARS runs of `*`."""

    self_only = False

    def __init__(self, pattern: str, include: bool | None = None):
        super().__init__(pattern, include)
        if self.regex is None:
            return
        source = _self_only(self.regex.pattern) if self.self_only else self.regex.pattern
        try:
            if len(_STAR_RUN.findall(pattern)) >= LINEAR_FROM_STARS:
                self.regex = re2.compile(source)
            elif source != self.regex.pattern:
                self.regex = re.compile(source)
        except re2.error:  # beyond RE2's size budget: dropped, as git drops a pattern it can't parse
            self.regex, self.include = None, None


class _SelfPattern(_Pattern):
    self_only = True


def compile_spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """A spec of gitignore-style globs (--include/--exclude): a directory pattern also matches what
    is below it. Matched pattern by pattern (RE2's set matcher has a size budget that a long list
    exceeds). Paths given to it must be display names: RE2 takes UTF-8, which lone surrogates are
    not."""
    return pathspec.GitIgnoreSpec.from_lines(list(lines), _Pattern, backend="simple")


def compile_ignore(lines: Iterable[str]) -> pathspec.PathSpec:
    """A spec of an ignore file's lines: each matches a path itself, the last matching line wins."""
    return pathspec.PathSpec.from_lines(_SelfPattern, list(lines), backend="simple")


def read_ignore_file(path: Path) -> pathspec.PathSpec | None:
    """The spec of one ignore file; None when it is absent, unreadable or has no patterns."""
    if not path.is_file():  # absent, or a FIFO/dir named like an ignore file: don't block on it
        return None
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:  # an unreadable ignore file: git silently skips it too
        return None
    spec = compile_ignore(lines)
    return spec if len(spec) else None


def git_dir(directory: Path) -> Path | None:
    """The git directory holding `info/exclude` for a work tree rooted at `directory`: `.git`
    itself, or for a linked work tree or submodule (`.git` a file saying `gitdir: ...`) the
    common directory it names."""
    dot_git = directory / ".git"
    if dot_git.is_dir():
        return dot_git
    try:
        text = dot_git.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = directory / text[len("gitdir:") :].strip()
    try:
        common = (target / "commondir").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return target
    return target / common


def _config_value(text: str, section: str, key: str) -> str | None:
    """The last value of `section.key` in git config text (no includes, as ripgrep reads it)."""
    current, found = "", None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line[1:].split("]", 1)[0].split(None, 1)[0].strip().lower() if "]" in line else ""
            continue
        name, sep, value = line.partition("=")
        if current == section and sep and name.strip().lower() == key:
            value = value.strip()
            if value.startswith('"') and '"' in value[1:]:
                value = value[1 : value.index('"', 1)]
            else:
                value = re.split(r"\s[#;]", value, maxsplit=1)[0].strip()
            found = value
    return found


def global_excludes_file(env: os._Environ[str] | dict[str, str] = os.environ) -> Path | None:
    """The user's global git ignore file: `core.excludesFile` from `~/.gitconfig` (which wins) or
    `$XDG_CONFIG_HOME/git/config`, else git's default `$XDG_CONFIG_HOME/git/ignore`
    (`~/.config/git/ignore` when XDG_CONFIG_HOME is unset or empty)."""
    home = env.get("HOME") or ""
    xdg = env.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else "")
    configs = [os.path.join(home, ".gitconfig")] if home else []
    configs += [os.path.join(xdg, "git", "config")] if xdg else []
    for config in configs:
        try:
            text = Path(config).read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        if value := _config_value(text, "core", "excludesfile"):
            if value == "~" or value.startswith("~/"):
                value = home + value[1:]
            return Path(value)
    return Path(xdg, "git", "ignore") if xdg else None


# One ignore layer: (directory relative to the anchor, "" or ending in "/", its spec).
Layer = tuple[str, pathspec.PathSpec]


@dataclass(frozen=True)
class Rules:
    """The ignore rules in force in one directory: its layers per kind, shallowest first.

    Paths are relative to one anchor: the repository root when the walk starts inside a git work
    tree, else the walk root.
    """

    layers: dict[str, tuple[Layer, ...]] = field(default_factory=dict)

    def ignored(self, path: str) -> bool:
        """Whether `path` (relative to the anchor; a directory ends in "/") is ignored."""
        for kind in KINDS:
            for base, spec in reversed(self.layers.get(kind, ())):
                include = spec.check_file(path[len(base) :]).include
                if include is not None:
                    return include
        return False

    def enter(self, directory: Path, base: str, repository_root: bool) -> Rules:
        """The rules inside `directory` (at `base` from the anchor): its ignore files added; at a
        repository root, git's rules from above are dropped and its exclude files come in."""
        layers, changed = dict(self.layers), repository_root
        if repository_root:
            layers.update({kind: () for kind in GIT_KINDS})
            gdir = git_dir(directory)
            if gdir is not None and (spec := read_ignore_file(gdir / "info" / "exclude")):
                layers["exclude"] = ((base, spec),)
            excludes = global_excludes_file()
            if excludes is not None and (spec := read_ignore_file(excludes)):
                layers["global"] = ((base, spec),)
        for name in IGNORE_FILES:
            if spec := read_ignore_file(directory / name):
                layers[name] = (*layers.get(name, ()), (base, spec))
                changed = True
        return Rules(layers) if changed else self

    def __bool__(self) -> bool:
        return any(self.layers.values())


def rules_above(root: Path, display: Callable[[str], str]) -> tuple[Rules, str]:
    """The rules in force in `root`'s parent directory, and `root`'s path from the anchor ("" or
    ending in "/"; its names shown by `display`). Inside a git work tree they come from the
    directories from the repository root down to `root`'s parent; outside one there are none, and
    `root` is the anchor."""
    try:
        real = root.resolve()
    except OSError:
        return Rules(), ""
    repo = next((d for d in (real, *real.parents) if os.path.lexists(d / ".git")), None)
    if repo is None or repo == real:
        return Rules(), ""
    rules, base, directory = Rules(), "", repo
    for i, part in enumerate(real.relative_to(repo).parts):
        rules = rules.enter(directory, base, repository_root=i == 0)
        directory, base = directory / part, base + display(part) + "/"
    return rules, base
