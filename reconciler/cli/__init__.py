"""The `photosync` command line: parse, call one app or queries function, render, map errors
to exit codes (docs/architecture.md).

`commands` declares the commands; `options` turns config.SETTINGS into flags; `render` writes
the text a person reads; `progress` draws the bars on a terminal; `exits` maps errors to the
contract's exit codes. Nothing heavy is imported here: each command imports what it uses, so
`photosync --version` and `--help` start in a blink.
"""

from reconciler.cli.commands import main

__all__ = ["main"]
