"""One module per `auditlog` subcommand, each with `register(subparsers)`."""
