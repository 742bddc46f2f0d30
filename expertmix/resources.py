"""Where the bundled data folders (rules/, genres/, models/, the demo) are found.

In a source checkout or an editable install they are the top-level folders of the repository;
in a wheel they are installed inside the package as ``expertmix/_data/<name>`` (see
``pyproject.toml``). ``EXPERTMIX_DATA`` overrides both.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Folder of bundled data ``name`` ("rules", "genres", "models" or "demo", which ships inside the package)."""
    env = os.environ.get("EXPERTMIX_DATA")
    candidates = [Path(env) / name] if env else []
    candidates += [_PACKAGE / name, _PACKAGE / "_data" / name, _PACKAGE.parent / name]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]
