"""Tables and figures for reports/, built from results rows alone (no torch here)."""

from see.report.build import build_reports

__all__ = ["build_reports"]
