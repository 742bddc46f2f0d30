"""expertmix: an automatic mixing engineer.

Python API (mirrors the CLI)::

    import expertmix
    result = expertmix.mix("stems/", "out/", genre="pop")       # analyse, plan, render, master
    plan = expertmix.plan("stems/", "plan.yaml", genre="rock")    # analyse and plan only
    result = expertmix.render("plan.yaml", "out2/")                # re-render an edited plan
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Our numpy work is many small matrix products per audio chunk: a BLAS thread pool only adds
# contention (measured 3-5x slower analysis on a loaded 2-core machine, benchmarks/README.md).
# We parallelise across processes instead. Set before numpy is imported; a user's setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import MixResult
    from .plan import MixPlan

__all__ = ["__version__", "mix", "plan", "render", "load_plan"]


def mix(stems_dir: Any, out_dir: Any, *, genre: str = "pop", **options: Any) -> "MixResult":
    """Mix and master a folder of stems into ``out_dir``. See :func:`expertmix.pipeline.run_mix`."""
    from .pipeline import run_mix

    return run_mix(stems_dir, out_dir, genre=genre, **options)


def plan(stems_dir: Any, plan_path: Any, *, genre: str = "pop", **options: Any) -> "MixPlan":
    """Analyse and plan only; writes ``plan_path``. See :func:`expertmix.pipeline.run_plan`."""
    from .pipeline import run_plan

    return run_plan(stems_dir, plan_path, genre=genre, **options)


def render(plan_or_path: Any, out_dir: Any, **options: Any) -> "MixResult":
    """Render an (edited) plan without re-analysing. See :func:`expertmix.pipeline.run_render`."""
    from .pipeline import run_render

    return run_render(plan_or_path, out_dir, **options)


def load_plan(path: Any) -> "MixPlan":
    """Read and validate a plan YAML file."""
    from .plan import load_plan as _load

    return _load(path)
