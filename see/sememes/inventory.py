"""HowNet's sememe inventory (2,540 `en|zh` labels with frequencies) and its taxonomy.

Read from the data directory (`hownet/sememe_all.json`, `hownet/resources/
sememe_triples_taxonomy.txt`, see MANIFEST.md): both sources draw their units from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from see.data import data_dir, data_file


@dataclass(frozen=True)
class Inventory:
    frequency: dict[str, int]  # "en|zh" label -> frequency in HowNet
    parents: dict[str, tuple[str, ...]]  # label -> its hypernym labels in the taxonomy
    by_english: dict[str, str]  # lowercase English half -> label (the most frequent one)


@cache
def load_inventory(root: str | None = None) -> Inventory:
    folder = data_dir(root)
    frequency = json.loads(data_file("hownet/sememe_all.json", folder).read_text(encoding="utf-8"))
    parents: dict[str, list[str]] = {}
    triples = data_file("hownet/resources/sememe_triples_taxonomy.txt", folder)
    for line in triples.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] == "hypernym":
            parents.setdefault(parts[0], []).append(parts[2])
    by_english: dict[str, str] = {}
    # most frequent label first, ties by label: deterministic when English halves repeat
    for label in sorted(frequency, key=lambda s: (-frequency[s], s)):
        by_english.setdefault(label.split("|")[0].lower(), label)
    return Inventory(frequency, {k: tuple(v) for k, v in parents.items()}, by_english)
