"""Applications on top of the library: the ``bnn`` command line (``cli``), the demo (``demo``),
the UCI benchmark (``uci``) and its data sets (``datasets``). Nothing in ``bnn`` imports them;
run them from the command line."""

__all__: list[str] = []
