"""What a run leaves behind: the JSONL trace, the SQLite history, and replaying a trace."""
