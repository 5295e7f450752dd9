"""`--schema FILE|JSON`: the answer is a JSON document valid against a JSON Schema.

`load` reads and checks the schema when the settings are made (a bad one is exit 2 before any
input is read or any request is made). The loop asks `Schema.check` about each answer it would
accept (agent.Agent._accept): a valid one is printed as normalised JSON, an invalid one gets one
repair turn quoting the validation errors, and one still invalid ends the run with exit 6.

The validator is `jsonschema`: the draft the schema's `$schema` names, else 2020-12, with format
checking on (`"format": "date"` is checked, not only noted). Imported only when --schema is given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from .errors import UsageError

MAX_ERRORS = 5  # validation errors quoted to the model and in the run's error message
MAX_ERROR_CHARS = 300  # of one error: jsonschema's messages quote the offending value whole
SCHEMA_HINT = 'give a JSON Schema as a file or as inline JSON, e.g. --schema \'{"type": "object"}\''
# An answer written as a fenced block (```json ... ```), as models often do: the JSON inside counts.
FENCED = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n(.*?)\n?[ \t]*```\Z", re.DOTALL | re.IGNORECASE)

PROMPT_SECTION = """\
The answer must be a JSON document valid against this JSON Schema:
```json
{schema}
```
Build the answer in the REPL as a Python dict or list that follows the schema (values: str, int, \
float, bool, None, and nested dicts and lists), then give it with FINAL_VAR and the variable's \
name: a dict or list comes back as JSON. FINAL with the JSON text itself works too. The JSON is \
the whole answer: no prose around it."""

REPAIR = """\
Your final answer is not valid against the JSON Schema it must follow:
{errors}
Fix it: build the corrected answer as a dict or list in a ```repl``` block, check it, and give it \
with FINAL_VAR and the variable's name. This is the only repair turn: an answer that is still \
invalid ends the run."""


@dataclass(frozen=True)
class Checked:
    """An answer checked against the schema: `text` is the normalised JSON when it is valid."""

    errors: list[str] = field(default_factory=list)  # at most MAX_ERRORS, then a count of the rest
    text: str | None = None  # json.dumps of the parsed answer, on one line

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Schema:
    document: dict | bool  # the schema itself
    source: str  # for messages: "the schema file PATH" or "the inline --schema"

    def prompt_section(self) -> str:
        """What the system prompt says about the answer's form."""
        return PROMPT_SECTION.format(schema=json.dumps(self.document, indent=2, ensure_ascii=False))

    def check(self, answer: str) -> Checked:
        """Whether `answer` is JSON valid against the schema. Surrounding whitespace and a
        ```json fence around the document are tolerated; NaN and Infinity are not JSON."""
        text = answer.strip()
        fenced = FENCED.match(text)
        if fenced:
            text = fenced.group(1).strip()
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            head = text[:80] + ("..." if len(text) > 80 else "")
            return Checked([f"the answer is not JSON ({exc}); it starts: {head!r}"])
        validator_class = jsonschema.validators.validator_for(self.document)
        validator = validator_class(self.document, format_checker=validator_class.FORMAT_CHECKER)
        try:
            errors = sorted(validator.iter_errors(value), key=_shallow_first)
        except jsonschema.exceptions.SchemaError as exc:  # not caught by load: a $ref to nowhere
            raise UsageError(f"{self.source} cannot be used: {_clip(str(exc))}") from exc
        except Exception as exc:  # referencing's Unresolvable ($ref to a document we do not fetch)
            raise UsageError(
                f"{self.source} cannot be used: {type(exc).__name__}: {_clip(str(exc))}",
                hint="the schema must be self-contained: no $ref to other files or URLs",
            ) from exc
        if errors:
            return Checked(_describe(errors))
        return Checked(text=json.dumps(value, ensure_ascii=False))

    def repair_message(self, errors: list[str]) -> str:
        return REPAIR.format(errors="\n".join(f"- {e}" for e in errors))


def load(text: str) -> Schema:
    """The schema `--schema` names: inline JSON when it starts with `{` or `[`, else a file.
    Unreadable, not JSON, or not a valid JSON Schema: a UsageError saying which."""
    inline = text.lstrip()[:1] in ("{", "[")
    source = "the inline --schema" if inline else f"the schema file {text}"
    if inline:
        raw = text
    else:
        try:
            raw = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"cannot read the schema file {text}: {reason}", hint=SCHEMA_HINT) from exc
    try:
        document = json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}", hint=SCHEMA_HINT) from exc
    if not isinstance(document, dict | bool):
        kind = type(document).__name__
        raise UsageError(f"{source} must be a JSON object (or true/false), not {kind}", hint=SCHEMA_HINT)
    return Schema(_checked(document, source), source)


def _checked(document: dict | bool, source: str) -> dict | bool:
    """The document, once it is known to be a JSON Schema of a draft jsonschema knows."""
    if isinstance(document, dict) and "$schema" in document:
        if jsonschema.validators.validator_for(document, default=None) is None:
            raise UsageError(
                f"{source} names an unknown $schema: {document['$schema']!r}",
                hint="use a draft URI such as https://json-schema.org/draft/2020-12/schema, or none",
            )
    validator_class = jsonschema.validators.validator_for(document)
    try:
        validator_class.check_schema(document)
    except jsonschema.exceptions.SchemaError as exc:
        where = exc.json_path if exc.json_path != "$" else "its root"
        raise UsageError(
            f"{source} is not a valid JSON Schema: at {where}: {_clip(exc.message)}",
            hint="see https://json-schema.org/understanding-json-schema/",
        ) from exc
    return document


def _describe(errors: list[jsonschema.ValidationError]) -> list[str]:
    lines = [f"at {e.json_path}: {_clip(e.message)}" for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        lines.append(f"(and {len(errors) - MAX_ERRORS} more)")
    return lines


def _shallow_first(error: jsonschema.ValidationError) -> tuple[int, str]:
    """Errors near the document's root first (they say most), then in the document's order."""
    return len(error.path), error.json_path


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
