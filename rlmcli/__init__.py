"""rlm: answer questions about inputs far larger than a context window (Recursive Language Models)."""

__version__ = "0.1.0"
