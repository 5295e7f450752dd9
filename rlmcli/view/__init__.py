"""How a run is shown: the live view (Rich on a terminal, plain lines otherwise) and escaping."""
