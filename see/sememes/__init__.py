"""Sememe knowledge (HowNet, or WordNet mapped onto HowNet's sememe inventory) and token units."""

from see.sememes.sources import SOURCES, SememeSource, get_source, resolve_source_name

__all__ = ["SOURCES", "SememeSource", "get_source", "resolve_source_name"]
