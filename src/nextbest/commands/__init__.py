"""One module per `nextbest` subcommand; see `nextbest.cli`."""
