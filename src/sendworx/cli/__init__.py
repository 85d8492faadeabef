"""The `sendworx` command line: one entry point, one module per group of subcommands.

`main.py` parses and dispatches; the work lives in the engine and injector packages.
"""
