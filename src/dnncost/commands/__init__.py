"""One module per ``dnncost`` subcommand; see :mod:`dnncost.cli`."""
