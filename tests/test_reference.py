"""The published reference of `reproduce` must match what its preset expands to today: a changed
default changes cell keys, and the reference could then never be REPRODUCED (issue 38)."""

import dataclasses
from pathlib import Path

import pytest

from see.config import load_grid
from see.methods import get_method
from see.report.verdict import published_run, stale_reference

RESULTS = Path(__file__).resolve().parent.parent / "results"


def smoke_reference():
    reference = published_run(RESULTS, "smoke")
    assert reference is not None, "no published smoke run in results/PUBLISHED"
    return reference


def test_the_published_smoke_reference_matches_todays_preset_and_defaults():
    stale = stale_reference(load_grid("smoke"), smoke_reference())
    assert stale == {"new": [], "gone": []}, (
        "results/PUBLISHED's smoke run no longer matches the smoke preset with today's defaults: "
        "republish it with `python -m see reproduce --preset smoke --publish`"
    )


def test_a_changed_default_makes_the_reference_stale(monkeypatch):
    pq = get_method("pq")
    default_iters = dataclasses.fields(pq.Options)
    changed = dataclasses.make_dataclass(
        "PQOptions",
        [("iters", int, dataclasses.field(default=26))],  # 25 before
        bases=(pq.Options,),
        frozen=True,
    )
    monkeypatch.setattr(pq, "Options", changed)
    assert next(f.default for f in default_iters if f.name == "iters") == 25
    stale = stale_reference(load_grid("smoke"), smoke_reference())
    assert stale["new"] and stale["gone"] and len(stale["new"]) == len(stale["gone"])


@pytest.mark.parametrize("models", [["smollm2-135m"], ["gemma3-270m"]])
def test_the_check_can_be_limited_to_the_models_run(models):
    stale = stale_reference(load_grid("smoke"), smoke_reference(), models)
    assert stale["gone"] == []


def test_an_option_added_later_keys_cells_only_when_set_away_from_its_default():
    from see.compress import resolved_options

    assert "residual_tiers" not in resolved_options("pq", {})  # fits as before it existed
    assert resolved_options("pq", {"residual_tiers": 2})["residual_tiers"] == 2
    assert resolved_options("pq", {"residual_tiers": 1}) == resolved_options("pq", {})
