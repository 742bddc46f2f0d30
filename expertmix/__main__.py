"""The ``expertmix`` console script (and ``python -m expertmix``).

For the commands that render, the worker processes start before the CLI is even imported
(:func:`expertmix.workers.prestart`): the workers' fork server then loads its libraries while
this process imports Typer, rich and the pipeline, on the other core.
"""
from __future__ import annotations

import sys

#: Commands that use worker processes.
_POOLED_COMMANDS = frozenset({"mix", "render", "demo"})


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in _POOLED_COMMANDS and not {"--help", "-h"} & set(args):
        from .workers import prestart

        prestart()
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
