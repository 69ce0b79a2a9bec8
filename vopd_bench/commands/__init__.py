"""CLI subcommands, one module each (module `foo_bar` is `vopd-bench foo-bar`)."""
