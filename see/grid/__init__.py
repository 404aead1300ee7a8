"""Grids: expand a config into cells (cells.py), run one cell (pipeline.py), the columns of
its rows (rows.py), and the executors that run them all (executors.py)."""

from see.grid.cells import Cell, expand, is_trained
from see.grid.executors import EXECUTORS, run_grid
from see.grid.pipeline import build_model, run_cell
from see.grid.rows import identity

__all__ = [
    "EXECUTORS",
    "Cell",
    "build_model",
    "expand",
    "identity",
    "is_trained",
    "run_cell",
    "run_grid",
]
