"""Threads and OpenMP's wait policy: --threads / $SEE_THREADS, PASSIVE unless the user chose."""

import os

import pytest
import torch

from see.bench.contention import check_settings
from see.runtime import configure, parse_threads


def test_thread_counts_are_positive_integers():
    assert parse_threads("3") == 3 and parse_threads(2) == 2 and parse_threads(None) is None
    for bad in ("0", "-1", "two", 1.5):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            parse_threads(bad)


def test_configure_sets_threads_and_keeps_a_chosen_wait_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        for name in ("OMP_WAIT_POLICY", "SEE_THREADS"):
            # setenv first: a delenv of an unset variable is not undone, so configure()'s
            # SEE_THREADS=1 would leak into every later test (and the grids they run)
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
        assert configure(1) == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # children inherit it
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        configure(1)
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        monkeypatch.setenv("OMP_WAIT_POLICY", "SOMETIMES")
        with pytest.raises(ValueError, match="OMP_WAIT_POLICY='SOMETIMES'"):
            configure(1)
    finally:
        torch.set_num_threads(before)


def test_contention_settings_are_checked():
    assert check_settings(["spin", "passive"]) == ["spin", "passive"]
    with pytest.raises(ValueError, match=r"unknown contention setting\(s\) \['fast'\]"):
        check_settings(["fast"])
