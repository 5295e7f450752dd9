"""The command line: one module per command group; `app.main` is the console entry point."""
