"""Every approach the pipeline runs: one line each. The Dagster assets, jobs, main job, `eval`/`predict`
commands, warehouse views and reports are all built from this list.

TAXO_APPROACHES adds approaches from other modules (comma-separated module paths, each defining
`APPROACH`), so a new classifier can be tried without editing the package."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from taxo_pipeline.approaches import (
    hierarchical_cascade,
    image_retrieval,
    label_transfer,
    nli,
    reranking,
    score_fusion,
    text_retrieval,
    title_description,
)
from taxo_pipeline.approaches.spec import Approach
from taxo_pipeline.errors import InputError

BUILT_IN: tuple[Approach, ...] = (
    text_retrieval.APPROACH,
    image_retrieval.APPROACH,
    nli.APPROACH,
    reranking.APPROACH,
    title_description.APPROACH,
    score_fusion.APPROACH,
    hierarchical_cascade.APPROACH,
    label_transfer.APPROACH,
)


def _extra(modules: Sequence[str]) -> list[Approach]:
    found = []
    for module_name in modules:
        try:
            approach = importlib.import_module(module_name).APPROACH
        except (ImportError, AttributeError) as exc:
            raise InputError(f"TAXO_APPROACHES: cannot load APPROACH from module {module_name!r}: {exc}") from exc
        if not isinstance(approach, Approach):
            raise InputError(f"TAXO_APPROACHES: {module_name}.APPROACH is a {type(approach).__name__}, not an Approach")
        found.append(approach)
    return found


def approaches(modules: Sequence[str] = ()) -> tuple[Approach, ...]:
    """The built-in approaches, then those of `modules` (the workspace's TAXO_APPROACHES), in order; names
    are unique."""
    every = (*BUILT_IN, *_extra(modules))
    names = [a.name for a in every]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(f"approach names must be unique; repeated: {', '.join(duplicates)}")
    for approach in every:
        for read in approach.reads:
            if read not in names:
                raise InputError(f"approach {approach.name!r} reads {read!r}, which is not registered")
    return every


def approach(name: str, modules: Sequence[str] = ()) -> Approach:
    """The approach called `name` among approaches(modules)."""
    known = approaches(modules)
    for candidate in known:
        if candidate.name == name:
            return candidate
    raise InputError(f"unknown approach {name!r}: expected one of {', '.join(a.name for a in known)}")
