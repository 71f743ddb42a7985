"""Applications on top of the library: the ``bnn`` command line (``cli``), the demo (``demo``),
the UCI benchmark (the ``uci`` package), the image benchmark (the ``images`` package) and the
data-set loaders (``datasets``). Nothing in
``bnn`` imports them; run them from the command line."""

__all__: list[str] = []
