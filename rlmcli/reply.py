"""Reading a root model's reply: its code blocks, its FINAL(...) / FINAL_VAR(name), its prose.

Pure functions of the text, shared by the loop (what to run, when to stop) and the views (the
reasoning shown without its code).
"""

from __future__ import annotations

import ast
import re

CODE_BLOCK = re.compile(r"```(?:repl|python|py)[ \t]*\n(.*?)```", re.DOTALL)
FINAL_VAR = re.compile(r"^\s*FINAL_VAR\(\s*(.*?)\s*\)\s*$", re.MULTILINE)
FINAL = re.compile(r"^\s*FINAL\(", re.MULTILINE)


def code_blocks(text: str) -> list[str]:
    return [block for block in CODE_BLOCK.findall(text) if block.strip()]


def find_final(text: str) -> tuple[str, str] | None:
    """('FINAL', answer) or ('FINAL_VAR', name) from the prose of a reply (code blocks ignored)."""
    prose = CODE_BLOCK.sub("", text)
    if m := FINAL_VAR.search(prose):
        return "FINAL_VAR", m.group(1).strip("'\"` ")
    if m := FINAL.search(prose):
        return "FINAL", _unquote(_final_argument(prose[m.end() :]).strip())
    return None


def _final_argument(rest: str) -> str:
    """The text up to FINAL's closing parenthesis.

    The balanced closing parenthesis wins when nothing but whitespace follows it on its line;
    otherwise (an answer with unbalanced parentheses, like "1) ... 2) ...") the last one does.
    """
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                line_end = rest.find("\n", i)
                if not rest[i + 1 : None if line_end < 0 else line_end].strip():
                    return rest[:i]
                break
            depth -= 1
    last = rest.rfind(")")
    return rest[:last] if last >= 0 else rest


def _unquote(answer: str) -> str:
    """FINAL("text") and FINAL('''text''') mean the text, not the quotes."""
    if answer[:1] in "\"'":
        try:
            value = ast.literal_eval(answer)
            if isinstance(value, str):
                return value
        except (ValueError, SyntaxError):
            pass
    return answer


def strip_code(text: str) -> str:
    return CODE_BLOCK.sub("", text).strip()
