"""Shared FastAPI dependencies (``Annotated`` aliases the routers use)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from .config import Settings, get_settings
from .engine import Engine
from .errors import BadInput, NotFound
from .registry import SlideEntry

# Stems of real files: no separators, no NUL, not "." or "..". The registry lookup is the real guard;
# this only turns obviously hostile ids into a 404 before anything else looks at them.
_BAD_ID = re.compile(r"[/\\\x00]|^\.{1,2}$")
_INDEX = re.compile(r"[0-9]{1,6}", re.ASCII)


def get_engine(request: Request) -> Engine:
    """The engine the lifespan created (model, registry, caches)."""
    return request.app.state.engine


def get_slide(
    slide_id: Annotated[str, Path(max_length=255)], engine: Annotated[Engine, Depends(get_engine)]
) -> SlideEntry:
    """The registered slide for a path's ``slide_id``, or 404."""
    if _BAD_ID.search(slide_id):
        raise NotFound(f"unknown slide id {slide_id!r}")
    return engine.entry(slide_id)


def get_branch(
    branch: Annotated[str, Query(description='"mean" (over branches) or a branch index 0..M-1')] = "mean",
) -> int | None:
    """The ``branch`` query: None for the mean, else the index."""
    if branch == "mean":
        return None
    if not _INDEX.fullmatch(branch):  # ASCII only: str.isdigit() accepts '²' and '①', which int() refuses
        raise BadInput(f"branch must be 'mean' or a branch index 0..M-1, got {branch!r}")
    return int(branch)


def get_model(
    model: Annotated[
        str, Query(description='ensembles: "mean" (the members\' attention averaged) or a member index 0..K-1')
    ] = "mean",
) -> int | None:
    """The ``model`` query: None for the ensemble's mean attention, else the member's index."""
    if model == "mean":
        return None
    if not _INDEX.fullmatch(model):
        raise BadInput(f"model must be 'mean' or an ensemble member index 0..K-1, got {model!r}")
    return int(model)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SlideDep = Annotated[SlideEntry, Depends(get_slide)]
BranchDep = Annotated[int | None, Depends(get_branch)]
ModelDep = Annotated[int | None, Depends(get_model)]
