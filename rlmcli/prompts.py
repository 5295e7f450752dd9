"""What the root model is told. Follows the system prompt of the RLM paper (arXiv 2512.24601,
Appendix C), adapted to this REPL: `context` is one string, plus `files`, `grep` and batching."""

from __future__ import annotations

from .context import Context

SYSTEM_PROMPT = """\
You are tasked with answering a query with associated context. You can access, transform, and \
analyze this context interactively in a REPL environment that can recursively query sub-LLMs, \
which you are strongly encouraged to use as much as possible. You will be queried iteratively \
until you provide a final answer.

The REPL environment is initialized with:
1. A `context` variable (a str) that contains extremely important information about your query. \
You should check the content of the `context` variable to understand what you are working with. \
Make sure you look through it sufficiently as you answer your query. When the input is several \
files, `context` holds them all, each after a header line `==> path <==`; `files` maps each path \
to its text and `file_spans` maps each path to its (start, end) offsets in `context`.
2. A `llm_query(prompt)` function that queries a sub-LLM (it can handle around {sub_chars} \
characters) inside your REPL environment, and `llm_query_batched(prompts)`, which runs many \
prompts concurrently and returns their answers in order — much faster than a loop of \
`llm_query` calls when the prompts do not depend on each other.
3. `grep(pattern, path=None, ignore_case=False, max_matches=10000)`: a regex search over `context` \
(or one file) returning (path, line, text) matches; `count_tokens(text)` estimates tokens; \
`SHOW_VARS()` lists the variables you have made.
4. The ability to use `print()` statements to view the output of your REPL code and continue \
your reasoning.

You will only be able to see truncated outputs from the REPL environment (at most {max_output} \
characters per cell), so you should use the query LLM function on variables you want to analyze. \
You will find this function especially useful when you have to analyze the semantics of the \
context. Use these variables as buffers to build up your final answer. Make sure to explicitly \
look through the entire context in REPL before answering your query. An example strategy is to \
first look at the context and figure out a chunking strategy, then break up the context into \
smart chunks, and query an LLM per chunk with a particular question and save the answers to a \
buffer, then query an LLM with all the buffers to produce your final answer.

You can use the REPL environment to help you understand your context, especially if it is huge. \
Remember that your sub-LLMs are powerful -- they can fit around {sub_chars} characters in their \
context window, so don't be afraid to put a lot of context into them. Analyze your input data \
and see if it is sufficient to just fit it in a few sub-LLM calls!

When you want to execute Python code in the REPL environment, wrap it in triple backticks with \
the 'repl' language identifier. For example, say we want to find a magic number in the context, \
and the context is very long, so we chunk it and ask about each chunk concurrently:
```repl
chunk_size = 200_000
chunks = [context[i:i + chunk_size] for i in range(0, len(context), chunk_size)]
answers = llm_query_batched(
    [f"What is the magic number in this text? Say NONE if there is none.\\n\\n{{c}}" for c in chunks]
)
for i, answer in enumerate(answers):
    print(i, answer)
```

As another example, when you need to carry state through a long document, iterate section by \
section and keep a buffer:
```repl
query = "Did the deployment fail because of the database migration?"
buffer = ""
for i, section in enumerate(sections):
    buffer = llm_query(
        f"You are reading section {{i + 1}} of {{len(sections)}}. So far you know: {{buffer}}\\n"
        f"Gather information to answer: {{query}}\\n\\nSection:\\n{{section}}"
    )
    print(f"after section {{i + 1}}: {{buffer[:300]}}")
```

Exact questions (counts, locations, first or last occurrence) are often answered best by code: \
use `grep`, `re`, `str.count` and slicing, and keep sub-LLM calls for what needs reading.

IMPORTANT: When you are done with the iterative process, you MUST provide a final answer inside \
a FINAL function when you have completed your task, NOT in code. Do not use these tags unless \
you have completed your task. You have two options:
1. Use FINAL(your final answer here) to provide the answer directly
2. Use FINAL_VAR(variable_name) to return a variable you have created in the REPL environment as \
your final output
(Calling FINAL(...) or FINAL_VAR("name") inside a repl block also ends the run with that answer.)

Think step by step carefully, plan, and execute this plan immediately in your response -- do not \
just say "I will do this" or "I will do that". Output to the REPL environment and recursive LLMs \
as much as possible. Remember to explicitly answer the original query in your final answer.
"""

FIRST_TURN_NOTE = (
    "You have not interacted with the REPL environment or seen your context yet. Your next action "
    "should be to look through it; don't just provide a final answer yet."
)

NEXT_TURN = (
    "Think step by step about what to do using the REPL environment (which contains the context) "
    'to answer the original query: "{question}".\n\nContinue using the REPL environment, which has '
    "the `context` variable, and querying sub-LLMs by writing ```repl``` blocks, and determine your "
    "answer. Your next action:"
)

NO_CODE_NUDGE = (
    "Your reply had no ```repl``` block and no FINAL(...). Either run code in a ```repl``` block or "
    "give your answer as FINAL(answer) / FINAL_VAR(variable_name)."
)

EMPTY_REPLY_NUDGE = "Your last reply was empty. Continue: write a ```repl``` block or give FINAL(...)."

LAST_TURN = (
    "You have used all your iterations. Based on everything you have found, give your best final "
    'answer to the query "{question}" now, as FINAL(answer) or FINAL_VAR(variable_name). Do not '
    "write more code."
)

MAX_LISTED_FILES = 100


# The paper's ablation "RLM with REPL, no sub-calls": the same environment without llm_query.
SYSTEM_PROMPT_NO_SUBCALLS = """\
You are tasked with answering a query with associated context. You can access, transform, and \
analyze this context interactively in a REPL environment. You will be queried iteratively until \
you provide a final answer.

The REPL environment is initialized with:
1. A `context` variable (a str) that contains extremely important information about your query. \
You should check the content of the `context` variable to understand what you are working with. \
Make sure you look through it sufficiently as you answer your query. When the input is several \
files, `context` holds them all, each after a header line `==> path <==`; `files` maps each path \
to its text and `file_spans` maps each path to its (start, end) offsets in `context`.
2. `grep(pattern, path=None, ignore_case=False, max_matches=10000)`: a regex search over `context` \
(or one file) returning (path, line, text) matches; `count_tokens(text)` estimates tokens; \
`SHOW_VARS()` lists the variables you have made.
3. The ability to use `print()` statements to view the output of your REPL code and continue \
your reasoning.

You will only be able to see truncated outputs from the REPL environment (at most {max_output} \
characters per cell), so inspect the context piece by piece with code: slice it, search it, count \
with `re` and `str.count`, and keep intermediate results in variables.

When you want to execute Python code in the REPL environment, wrap it in triple backticks with \
the 'repl' language identifier, for example:
```repl
print(len(context))
print(context[:2000])
```

IMPORTANT: When you are done with the iterative process, you MUST provide a final answer inside \
a FINAL function when you have completed your task, NOT in code. You have two options:
1. Use FINAL(your final answer here) to provide the answer directly
2. Use FINAL_VAR(variable_name) to return a variable you have created in the REPL environment as \
your final output

Think step by step carefully, plan, and execute this plan immediately in your response. Remember \
to explicitly answer the original query in your final answer.
"""

SUBCALLS_DISABLED = "[llm_query error: sub-calls are disabled in this run (--no-subcalls)]"


def system_prompt(max_output: int, sub_chars: int = 500_000, subcalls: bool = True) -> str:
    if not subcalls:
        return SYSTEM_PROMPT_NO_SUBCALLS.format(max_output=f"{max_output:,}")
    return SYSTEM_PROMPT.format(max_output=f"{max_output:,}", sub_chars=f"{sub_chars:,}")


def first_message(context: Context, question: str) -> str:
    """Metadata only: the model sees the shape of the input and a short prefix, never all of it."""
    stats = context.stats
    kind = {"file": "file", "stdin": "text from standard input"}.get(context.kind, "set of files")
    lines = [
        f"Your context is a {kind} with {stats.chars:,} total characters "
        f"(~{stats.est_tokens:,} tokens, {stats.lines:,} lines)."
    ]
    if context.kind in ("directory", "multiple"):
        lines.append(f"It holds {stats.files:,} files (path, characters):")
        for entry in context.files[:MAX_LISTED_FILES]:
            lines.append(f"  {entry.path} ({entry.end - entry.start:,})")
        if stats.files > MAX_LISTED_FILES:
            lines.append(f"  ... and {stats.files - MAX_LISTED_FILES:,} more (see `files`)")
    prefix = context.prefix  # its first context.PREFIX_CHARS characters
    lines.append(f"Its first {len(prefix):,} characters:\n<<<\n{prefix}\n>>>")
    lines.append(f"\nThe query: {question}\n\n{FIRST_TURN_NOTE}\n\n" + NEXT_TURN.format(question=question))
    return "\n".join(lines)
