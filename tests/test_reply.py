"""The root reply parser (rlmcli/reply.py): which code runs, which FINAL ends the run, what prose is shown.

Tables of (reply text, expected result); each row names the case it covers. REAL_MODEL_REPLIES is the
issue-10 table: replies in the styles real models write, with what the parser makes of each (what
the loop then decides about them is in tests/test_agent.py).
"""

from __future__ import annotations

import pytest

from rlmcli.reply import code_blocks, find_final, is_name, is_placeholder, strip_code


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
    "unclosed fence at the end runs": ("```repl\nx = 1\n", ["x = 1\n"]),
    "unclosed plain fence is prose": ("```\nx = 1\n", []),
    "upper-case language": ("```Python\nx = 1\n```", ["x = 1\n"]),
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
    "the first FINAL line wins": ("FINAL(draft)\nFINAL_VAR(best)", ("FINAL", "draft")),
    "var with words after it on the line": ("FINAL_VAR(answer) is what I return", None),
    # Where FINAL does not count
    "inside a repl block": (fence("repl", "FINAL(x)\n"), None),
    "inside a python block": (fence("python", "FINAL_VAR(x)\n"), None),
    "inside a block, then the real one": (fence("repl", "FINAL(no)\n") + "\nFINAL(yes)", ("FINAL", "yes")),
    "var backticks with trailing punctuation": ("`FINAL_VAR(answer)`.", ("FINAL_VAR", "answer")),
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
    "empty block removed too": ("A\n" + fence("repl", "") + "\nB", "A\n\nB"),
    "the answer's fence is kept": (
        "FINAL(Use:\n" + fence("python", "print(1)\n") + "\n)",
        "FINAL(Use:\n" + fence("python", "print(1)\n") + "\n)",
    ),
}


@pytest.mark.parametrize("text,expected", STRIPPED.values(), ids=STRIPPED.keys())
def test_strip_code(text: str, expected: str) -> None:
    assert strip_code(text) == expected


# Issue 10: replies as real models write them -> (the code that runs, the FINAL found). The five
# defects of the issue are marked "defect N"; the loop's decision about each FINAL (accept, ask to
# confirm, refuse once) is pinned in tests/test_agent.py.
COUNT = "print(context.count('beta'))\n"
REAL_MODEL_REPLIES = {
    # defect 1: code and a text FINAL in one reply. Both are found; the loop runs the code and
    # accepts 99 only if the output shows it (it shows 10: the model is asked to confirm).
    "defect 1: code, then FINAL(99)": (fence("repl", COUNT) + "\nFINAL(99)", [COUNT], ("FINAL", "99")),
    "defect 1: prose, code, FINAL": (
        "Let me count.\n" + fence("python", COUNT) + "\nThe count is 99.\nFINAL(99)",
        [COUNT],
        ("FINAL", "99"),
    ),
    # defect 2: FINAL(name) is found as text; the loop reads `name` when the REPL binds it.
    "defect 2: FINAL of a variable's name": ("FINAL(result)", [], ("FINAL", "result")),
    "defect 2: after code that sets it": (
        fence("repl", "result = context.count('beta')\n") + "\nFINAL(result)",
        ["result = context.count('beta')\n"],
        ("FINAL", "result"),
    ),
    # defect 3: a fence inside the answer is part of the answer, never run.
    "defect 3: a python fence inside the answer": (
        "FINAL(Use this:\n```python\nprint('x')\n```\n)",
        [],
        ("FINAL", "Use this:\n```python\nprint('x')\n```"),
    ),
    "defect 3: a repl fence inside a quoted answer": (
        'FINAL("""Run:\n```repl\nimport os\n```""")',
        [],
        ("FINAL", "Run:\n```repl\nimport os\n```"),
    ),
    "defect 3: code after the FINAL line is not run": (
        "FINAL(42)\n" + fence("repl", "print('after')\n"),
        [],
        ("FINAL", "42"),
    ),
    "defect 3: code before the answer runs, the answer's code does not": (
        fence("repl", "x = 1\n") + "\nFINAL(Call it like this:\n" + fence("python", "f(x)\n") + "\n)",
        ["x = 1\n"],
        ("FINAL", "Call it like this:\n```python\nf(x)\n```"),
    ),
    # defect 4: a FINAL on turn 1 parses like any other; the loop refuses it once (big inputs).
    "defect 4: a plan given as the answer": (
        "I will first look at the context, then count the errors.\nFINAL(I will count the errors)",
        [],
        ("FINAL", "I will count the errors"),
    ),
    # Decorated FINALs
    "bold": ("**FINAL(42)**", [], ("FINAL", "42")),
    "bold with prose after": ("**FINAL(42)**\nHope this helps (really).", [], ("FINAL", "42")),
    "backticks": ("`FINAL(42)`", [], ("FINAL", "42")),
    "backticks around the argument": ("FINAL(`42`)", [], ("FINAL", "42")),
    "list marker": ("- FINAL(42)", [], ("FINAL", "42")),
    "numbered list marker": ("1. FINAL(42)", [], ("FINAL", "42")),
    "star list marker with bold": ("* **FINAL(42)**", [], ("FINAL", "42")),
    "quote marker": ("> FINAL(42)", [], ("FINAL", "42")),
    "nested quote marker": ("> > FINAL(42)", [], ("FINAL", "42")),
    "trailing period": ("FINAL(42).", [], ("FINAL", "42")),
    "var with trailing period": ("FINAL_VAR(total).", [], ("FINAL_VAR", "total")),
    "var in bold": ("**FINAL_VAR(total)**", [], ("FINAL_VAR", "total")),
    "var in backticks with a colon": ("`FINAL_VAR(total)`:", [], ("FINAL_VAR", "total")),
    "var as a list item": ("- FINAL_VAR(total)", [], ("FINAL_VAR", "total")),
    "var quoted name": ('FINAL_VAR("total")', [], ("FINAL_VAR", "total")),
    "mention in prose is not a FINAL": ("When done I will write FINAL(42) here.", [], None),
    "var mentioned with words after it": ("FINAL_VAR(total) will hold it once I compute it", [], None),
    # Line ends and indentation
    "CRLF fence": ("```repl\r\nx = 1\r\nprint(x)\r\n```\r\n", ["x = 1\nprint(x)\n"], None),
    "CRLF fence then FINAL": ("```repl\r\nx = 1\r\n```\r\nFINAL(done)\r\n", ["x = 1\n"], ("FINAL", "done")),
    "indented fence in a list item": (
        "1. Count them:\n   ```python\n   n = 3\n   if n:\n       print(n)\n   ```\n",
        ["n = 3\nif n:\n    print(n)\n"],
        None,
    ),
    "indented body under an unindented fence": (
        "```repl\n    x = 1\n    print(x)\n```",
        ["x = 1\nprint(x)\n"],
        None,
    ),
    "closing fence indented less than the body": ("  ```repl\n  y = 2\n```", ["y = 2\n"], None),
    # Fences
    "unterminated fence at the end runs": (
        "Let me look.\n```repl\nprint(context[:100])\n",
        ["print(context[:100])\n"],
        None,
    ),
    "unterminated fence without a final newline": ("```repl\nprint(1)", ["print(1)"], None),
    "a fence in a string does not close the cell": (
        "```repl\ns = '```'\nprint(s.count('`'))\n```",
        ["s = '```'\nprint(s.count('`'))\n"],
        None,
    ),
    "a fence in a multi-line string does not close it mid-line": (
        "```repl\nmd = '''text ```python\nx''' \nprint(md)\n```",
        ["md = '''text ```python\nx''' \nprint(md)\n"],
        None,
    ),
    "a longer opening fence needs a longer closing one": (
        "````repl\nprint('```')\n```\nprint(2)\n````",
        ["print('```')\n```\nprint(2)\n"],
        None,
    ),
    "closing fence with words is not a close": ("```repl\nx = 1\n``` done\n```", ["x = 1\n``` done\n"], None),
    "FINAL in a plain fence": ("```\nFINAL(42)\n```", [], ("FINAL", "42")),
    "FINAL in a text fence": ("Answer:\n```text\nFINAL(blue)\n```", [], ("FINAL", "blue")),
    "FINAL called in a repl fence is code": (fence("repl", "FINAL(total)\n"), ["FINAL(total)\n"], None),
    "bash fence is not run": (fence("bash", "rm -rf /\n") + "\nFINAL(no)", [], ("FINAL", "no")),
    "two cells then FINAL_VAR": (
        fence("repl", "a = 1\n") + "\n" + fence("repl", "total = a + 1\n") + "\nFINAL_VAR(total)",
        ["a = 1\n", "total = a + 1\n"],
        ("FINAL_VAR", "total"),
    ),
    # Answers that contain code, or placeholders
    "an answer with inline code": (
        "FINAL(Call `retry(n=3)` first.)",
        [],
        ("FINAL", "Call `retry(n=3)` first."),
    ),
    "an answer that is a code line": ("FINAL(x = compute(y))", [], ("FINAL", "x = compute(y)")),
    "placeholder copied from the prompt": ("FINAL(answer)", [], ("FINAL", "answer")),
    "placeholder dots": ("FINAL(...)", [], ("FINAL", "...")),
    "no FINAL, only prose": ("I need to look at more of the file first.", [], None),
}


@pytest.mark.parametrize("text,blocks,final", REAL_MODEL_REPLIES.values(), ids=REAL_MODEL_REPLIES.keys())
def test_real_model_replies(text: str, blocks: list[str], final: tuple[str, str] | None) -> None:
    assert code_blocks(text) == blocks
    assert find_final(text) == final


def test_the_table_is_large_enough() -> None:
    assert len(REAL_MODEL_REPLIES) >= 40


NAMES = {"result": True, "total_2": True, "_x": True, "None": False, "for": False, "42": False, "a b": False}


@pytest.mark.parametrize("text,expected", NAMES.items(), ids=NAMES.keys())
def test_is_name(text: str, expected: bool) -> None:
    assert is_name(text) is expected


PLACEHOLDER_ANSWERS = {
    "answer": True, "Your answer": True, "your final answer here": True, "...": True, "<answer>": True,
    "[your answer]": True, "variable_name": True, "42": False, "The answer is 42": False, "blue": False,
}  # fmt: skip


@pytest.mark.parametrize("text,expected", PLACEHOLDER_ANSWERS.items(), ids=PLACEHOLDER_ANSWERS.keys())
def test_is_placeholder(text: str, expected: bool) -> None:
    assert is_placeholder(text) is expected
