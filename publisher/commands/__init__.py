"""Small subcommands that are not a feature module of their own."""
