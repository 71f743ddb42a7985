"""Applications on top of the library (nothing imports them): the ``bnn`` command line,
the demo, the UCI benchmark and its data sets."""
