"""Secrets stay home: the input is scanned for credentials (private keys, cloud keys, tokens) while
it is loaded, before the sandbox or any model sees it. By default rlm warns on stderr with counts
and `path:line`; `--redact-secrets` replaces each found secret with a placeholder of the same
length in characters, so every offset, line number and the file index stay right.

A found secret is never printed, traced or kept: findings are a path, a line and a rule name.

The rules are detect-secrets' (Yelp, Apache-2.0; v1.5.0) regex plugins, kept here as data and
written for RE2 (google-re2, already a dependency), which matches them all in one linear-time pass.
Measured on this machine (docs/PERFORMANCE.md): detect-secrets 1.5.0 itself, default plugins,
0.07 MB/s with ~50k false hits on loghub logs (its entropy and keyword plugins flag every hash and
`key=` line); its 46 regex patterns as one Python `re`: 1.6-1.8 MB/s; as one RE2 pattern: ~100 MB/s
(about 10 s a GB). Importing the patterns from the installed plugins is not clean: 13 of them use
look-around or a repetition RE2 refuses, two have a character-range typo (`0-9-_` spans `:` to
`_`), the import pulls in requests (~0.3 s), and the key plugin only flags a header line. So the
list is ours, derived from those plugins, with these changes:
- look-behind/look-ahead became plain boundary groups (`(?:^|\\W)`, `\\b`); the secret is a group;
- the public-IP rule is left out (an address is not a credential, and logs are full of them), and
  so are the entropy and keyword plugins (they flag every hash; the rate above);
- a private key is the header line's rule, and the key's body lines that follow are the secret
  (the BEGIN/END lines stay visible, so the model still knows a key was there);
- a JWT includes its signature;
- a Telegram token must stand alone (hardware IDs in HPC logs look like one inside a longer word).

Scanning works on the raw bytes as they stream past (context.py), complete lines at a time, so a
secret is never split across chunks; a line longer than MAX_PENDING is cut at a separator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .text import plural

MAX_PENDING = 1 << 20  # bytes held waiting for a line's end before the line is cut
MAX_FINDINGS = 10_000  # locations kept; the count goes on
SHOWN = 10  # locations named in the warning

# Assignment as detect-secrets' build_assignment_regex writes it: `[name] = "value"`, `name: value`.
_BEGIN = r"(?:^|\W)"
_OPEN = r"(?:\[|)(?:\"|'|)"
_ASSIGN = r"(?:\"|'|)(?:\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:\"|'|)"
_CLOUDANT = "(?:cloudant|cl|clou)(?:_|-|)(?:api|)"
_IBM = (
    "(?:ibm(?:_|-|)cloud(?:_|-|)iam|cloud(?:_|-|)iam|ibm(?:_|-|)cloud|ibm(?:_|-|)iam|ibm|iam|cloud|)"
    "(?:_|-|)(?:api|)"
)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str  # RE2 syntax; at most one capture group: the secret (without one, the whole match)


def _assignment(prefix: str, keyword: str, secret: str) -> str:
    return f"(?i){_BEGIN}{_OPEN}{prefix}(?:_|-|){keyword}{_ASSIGN}({secret})(?:\"|'|)"


RULES: tuple[Rule, ...] = (
    Rule("private-key", r"BEGIN (?:DSA |EC |OPENSSH |PGP |RSA |SSH2 ENCRYPTED |)PRIVATE KEY(?: BLOCK)?"),
    Rule("private-key", r"PuTTY-User-Key-File-2"),
    Rule("aws-access-key", r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"),
    Rule("aws-secret-key",
         r"(?i)aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?['\"]([0-9a-zA-Z/+]{40})['\"]"),
    Rule("artifactory-token", r"(?m)(?:\s|=|:|\"|^)(AKC[a-zA-Z0-9]{10,})(?:\s|\"|$)"),
    Rule("artifactory-token", r"(?m)(?:\s|=|:|\"|^)(AP[\dABCDEF][a-zA-Z0-9]{8,})(?:\s|\"|$)"),
    Rule("azure-storage-key", r"AccountKey=([a-zA-Z0-9+/=]{88})"),
    Rule("basic-auth", r"://[^:/?#\[\]@!$&'()*+,;=\s]+:([^:/?#\[\]@!$&'()*+,;=\s]+)@"),
    Rule("cloudant-key", _assignment(_CLOUDANT, "(?:key|pwd|pw|password|pass|token)", "[0-9a-f]{64}")),
    Rule("cloudant-key", _assignment(_CLOUDANT, "(?:key|pwd|pw|password|pass|token)", "[a-z]{24}")),
    Rule("cloudant-key", r"(?i)https?://[\w\-]+:([0-9a-f]{64}|[a-z]{24})@[\w\-]+\.cloudant\.com"),
    Rule("discord-bot-token", r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}"),
    Rule("github-token", r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}"),
    Rule("gitlab-token", r"(?:glpat|gldt|glft|glsoat|glrt)-[A-Za-z0-9_\-]{20,50}\b"),
    Rule("gitlab-token", r"GR1348941[A-Za-z0-9_\-]{20,50}\b"),
    Rule("gitlab-token", r"glcbt-(?:[0-9a-fA-F]{2}_)?[A-Za-z0-9_\-]{20,50}\b"),
    Rule("gitlab-token", r"glimt-[A-Za-z0-9_\-]{25}\b"),
    Rule("gitlab-token", r"glptt-[A-Za-z0-9_\-]{40}\b"),
    Rule("gitlab-token", r"glagent-[A-Za-z0-9_\-]{50,1000}\b"),  # RE2 counts to 1000, not 1024
    Rule("gitlab-token", r"gloas-[A-Za-z0-9_\-]{64}\b"),
    Rule("ibm-cloud-iam-key", _assignment(_IBM, "(?:key|pwd|password|pass|token)", "[a-zA-Z0-9_\\-]{44}")
         + r"(?:[^a-zA-Z0-9_\-]|$)"),
    Rule("ibm-cos-hmac-key", _assignment("(?:(?:ibm)?[-_]?cos[-_]?(?:hmac)?|)",
                                         "(?:secret[-_]?(?:access)?[-_]?key)", "[a-f0-9]{48}")
         + r"(?:[^a-f0-9]|$)"),
    Rule("jwt", r"eyJ[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_.+/=-]*)?"),
    Rule("mailchimp-key", r"[0-9a-z]{32}-us[0-9]{1,2}"),
    Rule("npm-token", r"//.+/:_authToken=\s*(npm_\S+|[A-Fa-f0-9-]{36})"),
    Rule("openai-key", r"sk-[A-Za-z0-9_-]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
    Rule("pypi-token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{70,}"),
    Rule("pypi-token", r"pypi-AgENdGVzdC5weXBpLm9yZw[A-Za-z0-9_-]{70,}"),
    Rule("sendgrid-key", r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}"),
    Rule("slack-token", r"(?i)xox(?:a|b|p|o|s|r)-(?:\d+-)+[a-z0-9]+"),
    Rule("slack-webhook", r"(?i)https://hooks\.slack\.com/services/T[a-zA-Z0-9_]+/B[a-zA-Z0-9_]+/[a-zA-Z0-9_]+"),
    Rule("softlayer-key", _assignment("(?:softlayer|sl)(?:_|-|)(?:api|)", "(?:key|pwd|password|pass|token)",
                                      "[a-z0-9]{64}")),
    Rule("softlayer-key", r"(?i)https?://api\.softlayer\.com/soap/(?:v3|v3\.1)/([a-z0-9]{64})"),
    Rule("square-oauth-secret", r"sq0csp-[0-9A-Za-z\\\-_]{43}"),
    Rule("stripe-key", r"(?:r|s)k_live_[0-9a-zA-Z]{24}"),
    Rule("telegram-bot-token", r"(?:^|\D)(\d{8,10}:[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)"),  # whole tokens
    Rule("twilio-key", r"AC[a-z0-9]{32}"),
    Rule("twilio-key", r"SK[a-z0-9]{32}"),
)  # fmt: skip

# The body of a private key after its header: base64 lines (bare, or quoted in source code), the
# `Name: value` headers of PEM and PuTTY files, blank lines. The first other line ends the block.
_KEY_LINE = (
    r"[ \t]*(?:[bBrRuU]?[\"'])?"  # an optional opening quote, as in source code
    r"(?:[A-Za-z0-9+/=]+|[A-Za-z][A-Za-z0-9-]*: ?[A-Za-z0-9+/=,. -]*|)"  # base64, a header, or nothing
    r"(?:\\n)?(?:[\"'])?[ \t]*[,+]?[ \t]*\r?"  # an escaped newline, the closing quote, a comma
)
_KEY_END = (b"-----END", b"END PGP PRIVATE KEY", b"---- END")
_CUT_AT = b" \t,;\"'<>"  # where a line longer than MAX_PENDING may be cut: never inside a token


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class _Compiled:
    regex: object  # re2 pattern over bytes
    key_line: object
    groups: list[tuple[int, int | None]]  # per rule: (its group, its secret's group or None)


@functools.cache
def _compiled() -> _Compiled:
    import re2  # a C extension: loaded when a scan starts, not for `rlm --help`

    options = re2.Options()
    options.max_mem = 64 << 20  # the default 8 MB is too little for ~40 rules in one program
    groups, parts, at = [], [], 1
    for rule in RULES:
        own = re2.compile(rule.pattern.encode()).groups
        groups.append((at, at + 1 if own else None))
        parts.append(f"({rule.pattern})" if rule.pattern[:2] != "(?" or rule.pattern[2] == ":" else
                     f"({_scoped(rule.pattern)})")  # fmt: skip
        at += 1 + own
    regex = re2.compile("|".join(parts).encode(), options)
    return _Compiled(regex, re2.compile(_KEY_LINE.encode()), groups)


def _scoped(pattern: str) -> str:
    """A leading flag group `(?i)` as a scoped one `(?i:...)`, so it covers this rule alone."""
    end = pattern.index(")")
    return f"(?{pattern[2:end]}:{pattern[end + 1 :]})"


def placeholder(rule: str, chars: int) -> bytes:
    """`[REDACTED aws-access-key]***`: exactly `chars` ASCII characters."""
    for label in (f"[REDACTED {rule}]", "[REDACTED]"):
        if len(label) <= chars:
            return (label + "*" * (chars - len(label))).encode()
    return b"*" * chars


def _chars(data: bytes) -> int:
    """Characters in UTF-8 bytes: the bytes that do not continue a character."""
    return len(data) - sum(1 for b in data if b & 0xC0 == 0x80) if not data.isascii() else len(data)


@dataclass
class Scanner:
    """Scans one input's files as their bytes stream past; with `redact`, what it hands back has
    every secret replaced. Use: start(path), then feed(chunk) and finish() give the bytes to decode."""

    redact: bool = False
    findings: list[Finding] = field(default_factory=list)
    count: int = 0  # all findings, kept or not
    redacted_lines: list[tuple[int, int]] = field(default_factory=list)  # of the current file (redact)
    _path: str = ""
    _line: int = 1  # the line number at the start of the pending bytes
    _pending: bytes = b""
    _in_key: bool = False  # the pending bytes continue a private key's body

    def start(self, path: str) -> None:
        self._path, self._line, self._pending, self._in_key = path, 1, b"", False
        self.redacted_lines = []

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n") + 1
        if not cut and len(data) > MAX_PENDING:  # one very long line: cut it at a separator
            window = data[-MAX_PENDING // 2 :]
            cut = len(data) - len(window) + max(window.rfind(bytes([c])) for c in _CUT_AT) + 1
            cut = cut if cut > len(data) - len(window) else len(data) - len(window)
        self._pending = data[cut:]
        return self._scan(data[:cut]) if cut else b""

    def finish(self) -> bytes:
        data, self._pending = self._pending, b""
        return self._scan(data)

    def _scan(self, data: bytes) -> bytes:
        compiled = _compiled()
        spans: list[tuple[int, int, str]] = []  # byte ranges to redact, in order
        pos, line, covered = 0, self._line, 0
        if self._in_key:
            covered = self._key_body(data, 0, spans)
        for match in compiled.regex.finditer(data):
            if match.start() < covered:  # inside a key body already taken
                continue
            rule_index = next(i for i, (g, _) in enumerate(compiled.groups) if match.start(g) >= 0)
            rule = RULES[rule_index]
            line += data.count(b"\n", pos, match.start())
            pos = match.start()
            self.count += 1
            if len(self.findings) < MAX_FINDINGS:
                self.findings.append(Finding(self._path, line, rule.name))
            if rule.name == "private-key":
                covered = self._key(data, match.end(), spans)
                continue
            secret = compiled.groups[rule_index][1]
            start, end = match.span(secret) if secret else match.span()
            spans.append((start, end, rule.name))
            covered = end
        if not self.redact or not spans:
            self._line += data.count(b"\n")
            return data
        out, at, line = [], 0, self._line
        for start, end, name in spans:
            line += data.count(b"\n", at, start)
            last = line + data.count(b"\n", start, end)
            if self.redacted_lines and self.redacted_lines[-1][1] >= line - 1:  # a key's next line
                self.redacted_lines[-1] = (self.redacted_lines[-1][0], last)
            else:
                self.redacted_lines.append((line, last))
            out += [data[at:start], placeholder(name, _chars(data[start:end]))]
            line, at = last, end
        self._line = line + data.count(b"\n", at)
        out.append(data[at:])
        return b"".join(out)

    def _key(self, data: bytes, at: int, spans: list) -> int:
        """After a key's header: the rest of its line when the key is inline (PEM in a JSON string,
        `-----BEGIN ...-----\\nMIIE...\\n-----END...`), then its body lines. Returns where it ends."""
        eol = data.find(b"\n", at)
        eol = len(data) if eol < 0 else eol
        rest_at = at + len(data[at:eol]) - len(data[at:eol].lstrip(b"-"))
        end_at = min((i for i in (data.find(m, rest_at, eol) for m in _KEY_END) if i >= 0), default=eol)
        if len(data[rest_at:end_at].strip(b" \t\r\"',\\n")) >= 16:  # an inline body, not just "-----"
            spans.append((rest_at, end_at, "private-key"))
            return end_at
        return self._key_body(data, eol + 1, spans) if eol < len(data) else len(data)

    def _key_body(self, data: bytes, at: int, spans: list) -> int:
        """Lines from `at` that look like a key's body become spans (each line's end kept, so the
        line count stays). Stops at an END line or another line; a body running past `data`
        continues in the next chunk."""
        key_line = _compiled().key_line
        self._in_key = False
        while at < len(data):
            eol = data.find(b"\n", at)
            eol = len(data) if eol < 0 else eol
            text = data[at:eol]
            if any(m in text for m in _KEY_END) or not key_line.fullmatch(text):
                return at
            body = text.rstrip(b"\r")
            if body.strip():
                spans.append((at, at + len(body), "private-key"))
            at = eol + 1
        self._in_key = True
        return len(data)


def warning(scanner: Scanner, redacted: bool) -> str | None:
    """The stderr/trace line for what a scan found: counts by rule and the first locations, never
    a secret. None when nothing was found."""
    if not scanner.count:
        return None
    rules: dict[str, int] = {}
    for f in scanner.findings:
        rules[f.rule] = rules.get(f.rule, 0) + 1
    by_rule = ", ".join(f"{n} {name}" for name, n in sorted(rules.items(), key=lambda r: (-r[1], r[0])))
    places = ", ".join(f.where() for f in scanner.findings[:SHOWN])
    more = scanner.count - min(SHOWN, len(scanner.findings))
    places += f" and {more} more" if more > 0 else ""
    what = plural(scanner.count, "possible secret")
    if redacted:
        return f"{what} redacted before the sandbox ({by_rule}): {places}"
    return (
        f"{what} in the input ({by_rule}): {places}; parts of the input go to the model as they are "
        "(--redact-secrets replaces them)"
    )
