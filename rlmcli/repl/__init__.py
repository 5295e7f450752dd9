"""The host side of the REPL: the framed protocol with sandbox/repl_server.py and the backends it
runs in (Docker, bubblewrap, a plain process). What runs inside them is the top-level sandbox/."""
