"""The root reply parser (rlmcli/reply.py): which code runs, which FINAL ends the run, what prose is shown.

Tables of (reply text, expected result) pinning today's protocol; each row names the case it covers.
"""

from __future__ import annotations

import pytest

from rlmcli.reply import code_blocks, find_final, strip_code


def fence(lang: str, body: str) -> str:
    return f"```{lang}\n{body}```"


CODE_BLOCKS = {
    "repl fence": (fence("repl", "x = 1\n"), ["x = 1\n"]),
    "python fence": (fence("python", "print(2)\n"), ["print(2)\n"]),
    "py fence": (fence("py", "y = 3\n"), ["y = 3\n"]),
    "spaces after the language": ("```repl  \t\nz = 4\n```", ["z = 4\n"]),
    "several blocks, in order": (
        "First.\n" + fence("repl", "a = 1\n") + "\nThen.\n" + fence("python", "b = 2\n"),
        ["a = 1\n", "b = 2\n"],
    ),
    "empty block skipped": (fence("repl", "") + "\n" + fence("repl", "c = 5\n"), ["c = 5\n"]),
    "blank block skipped": (fence("repl", "  \n\t\n"), []),
    "other languages are not run": (fence("bash", "ls\n") + fence("text", "hi\n"), []),
    "no language is not run": (fence("", "x = 1\n"), []),
    "a longer language name is not run": (fence("pythonic", "x = 1\n"), []),
    "words after the language": ("```repl x\ny = 1\n```", []),
    "unclosed fence": ("```repl\nx = 1\n", []),
    "no code at all": ("Just prose.", []),
}


@pytest.mark.parametrize("text,expected", CODE_BLOCKS.values(), ids=CODE_BLOCKS.keys())
def test_code_blocks(text: str, expected: list[str]) -> None:
    assert code_blocks(text) == expected


FINALS = {
    # FINAL(answer)
    "plain": ("FINAL(42)", ("FINAL", "42")),
    "after prose": ("I counted them.\nFINAL(There are 42 errors.)", ("FINAL", "There are 42 errors.")),
    "indented": ("  FINAL(indented)", ("FINAL", "indented")),
    "surrounding spaces trimmed": ("FINAL(  padded  )", ("FINAL", "padded")),
    "empty": ("FINAL()", ("FINAL", "")),
    "double quotes are removed": (
        'FINAL("The file says hello (once).")',
        ("FINAL", "The file says hello (once)."),
    ),
    "single quotes are removed": ("FINAL('single')", ("FINAL", "single")),
    "triple quotes over lines": ("FINAL('''one\ntwo''')", ("FINAL", "one\ntwo")),
    "escapes in a quoted answer": (r'FINAL("tab\there")', ("FINAL", "tab\there")),
    "unterminated quote kept as written": ('FINAL("half)', ("FINAL", '"half')),
    "a quoted prefix is not a string": ('FINAL("a" and "b")', ("FINAL", '"a" and "b"')),
    "multiline": ("FINAL(line one\nline two)", ("FINAL", "line one\nline two")),
    "nested parentheses": ("FINAL(f(x) = g(h(y)))", ("FINAL", "f(x) = g(h(y))")),
    "prose after the closing line is not the answer": (
        "FINAL(short)\nThanks (really) for asking.",
        ("FINAL", "short"),
    ),
    "unbalanced numbered list: the last parenthesis closes": (
        "FINAL(Steps: 1) boot 2) run)",
        ("FINAL", "Steps: 1) boot 2) run"),
    ),
    "unbalanced list over lines": (
        "FINAL(1) load\n2) parse\n3) answer)",
        ("FINAL", "1) load\n2) parse\n3) answer"),
    ),
    "no closing parenthesis: the rest": ("FINAL(no closing paren", ("FINAL", "no closing paren")),
    # FINAL_VAR(name)
    "var plain": ("FINAL_VAR(answer)", ("FINAL_VAR", "answer")),
    "var double quotes": ('FINAL_VAR("answer")', ("FINAL_VAR", "answer")),
    "var single quotes": ("FINAL_VAR('answer')", ("FINAL_VAR", "answer")),
    "var backticks": ("FINAL_VAR(`answer`)", ("FINAL_VAR", "answer")),
    "var spaces": ("The answer is ready.\n  FINAL_VAR(  answer  )  ", ("FINAL_VAR", "answer")),
    "var wins over an earlier FINAL": ("FINAL(draft)\nFINAL_VAR(best)", ("FINAL_VAR", "best")),
    "var with words after it on the line": ("FINAL_VAR(answer) is what I return", None),
    # Where FINAL does not count
    "inside a repl block": (fence("repl", "FINAL(x)\n"), None),
    "inside a python block": (fence("python", "FINAL_VAR(x)\n"), None),
    "inside a block, then the real one": (fence("repl", "FINAL(no)\n") + "\nFINAL(yes)", ("FINAL", "yes")),
    "inside a block of another language it counts": (fence("text", "FINAL(x)\n"), ("FINAL", "x")),
    "mid-line is not a FINAL": ("The FINAL(x) comes later.", None),
    "lower case is not a FINAL": ("final(x)", None),
    "no FINAL": ("Still looking.\n" + fence("repl", "print(len(context))\n"), None),
    "empty reply": ("", None),
}


@pytest.mark.parametrize("text,expected", FINALS.values(), ids=FINALS.keys())
def test_find_final(text: str, expected: tuple[str, str] | None) -> None:
    assert find_final(text) == expected


STRIPPED = {
    "code removed, prose kept": ("Thinking.\n" + fence("repl", "x = 1\n") + "\nMore.", "Thinking.\n\nMore."),
    "only code": (fence("python", "x = 1\n"), ""),
    "other fences are prose": (fence("bash", "ls\n"), fence("bash", "ls\n")),
    "outer whitespace trimmed": ("\n  Plain.  \n", "Plain."),
    "empty block removed too": ("A" + fence("repl", "") + "B", "AB"),
}


@pytest.mark.parametrize("text,expected", STRIPPED.values(), ids=STRIPPED.keys())
def test_strip_code(text: str, expected: str) -> None:
    assert strip_code(text) == expected
