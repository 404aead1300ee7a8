"""Shared fixtures: the real smallest offline model, loaded once per session."""

from __future__ import annotations

import os

import pytest
import torch

DATA_DIR = os.environ.get("SEE_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="SEE_DATA_DIR is not set")


@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer) of smollm2-135m; a fresh copy per test comes from `fresh_smollm`."""
    from see.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture
def fresh_smollm(smollm):
    import copy

    model, tok = smollm
    return copy.deepcopy(model), tok


@pytest.fixture(scope="session")
def sample_ids(smollm):
    _, tok = smollm
    text = "The quick brown fox jumps over the lazy dog. Paris is the capital of France."
    return torch.tensor([tok(text).input_ids])


# tests that take one of these fixtures load the real model: the slow tier
MODEL_FIXTURES = {"smollm", "fresh_smollm", "sample_ids"}


def pytest_collection_modifyitems(items):
    """`-m "not slow"` is the fast tier (no model loads; seconds)."""
    for item in items:
        if MODEL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
