"""Sememe sources: English word -> ranked HowNet sememe labels (`en|zh`).

- `hownet` (the SEE paper's source): OpenHowNet's word -> sense -> sememe dictionary. Needs
  `HowNet_dict_complete` (plus `sememe_all`, `sememe_triples_taxonomy.txt`) in OpenHowNet's
  resource folder (`~/.openhownet/resources`); online, `OpenHowNet.download()` fetches them.
- `wordnet` (offline substitute): WordNet 3.1 hypernym chains mapped onto the same HowNet
  inventory (see see/sememes/wordnet.py).
`auto` picks `hownet` when its dictionary is present, else `wordnet`, and says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from see.sememes.wordnet import lemma_candidates, round_robin

SOURCES = ("hownet", "wordnet")
HOWNET_FILES = ("sememe_all", "sememe_triples_taxonomy.txt", "HowNet_dict_complete")


class SememeSource(Protocol):
    name: str

    def sememes(self, word: str) -> list[str]:
        """Ranked sememe labels of an English word ([] when it has none)."""
        ...


def hownet_resource_dir() -> Path:
    """OpenHowNet's resource folder (its module global, so tests can patch it)."""
    from OpenHowNet import Download

    return Path(Download.OPENHOWNET_RESOURCE_PATH) / "resources"


def missing_hownet_files() -> list[str]:
    folder = hownet_resource_dir()
    return [name for name in HOWNET_FILES if not (folder / name).is_file()]


class HowNetSource:
    """Sememes from OpenHowNet's dictionary: senses by sense number, each sense's sememes in
    the order its definition (KDML `Def`) names them, the head sememe first."""

    name = "hownet"

    def __init__(self):
        missing = missing_hownet_files()
        if missing:
            raise FileNotFoundError(
                f"HowNet sememe source: {missing} missing in {hownet_resource_dir()}. Online, "
                "run `python -c 'import OpenHowNet; OpenHowNet.download()'`; offline, copy "
                "the files there (HowNet_dict_complete is the concatenation of "
                "HowNet_dict_complete_split_* in thunlp/OpenHowNet, see shared/data/MANIFEST.md)"
                ", or use sememe_source='wordnet'"
            )
        import contextlib
        import io

        import OpenHowNet

        with contextlib.redirect_stdout(io.StringIO()):  # it prints instead of raising
            self.dict = OpenHowNet.HowNetDict()
        if not hasattr(self.dict, "en_map"):
            raise FileNotFoundError(f"OpenHowNet could not read {hownet_resource_dir()}")

    def _senses(self, word: str) -> list:

        for form in lemma_candidates(word):
            if form in self.dict.en_map:
                return sorted(self.dict.en_map[form], key=lambda s: int(s.No))
        return []

    def sememes(self, word: str) -> list[str]:
        senses = [[s.en_zh for s in sense.sememes] for sense in self._senses(word.lower())]
        return round_robin(senses)


def resolve_source_name(name: str = "auto") -> str:
    """`auto` -> hownet or wordnet; `random` -> "random-<auto's source>" (see.py: the control)."""
    if name == "random":
        return f"random-{resolve_source_name('auto')}"
    if name == "auto":
        return "wordnet" if missing_hownet_files() else "hownet"
    if name not in SOURCES:
        raise ValueError(f"unknown sememe source {name!r}; allowed: {[*SOURCES, 'auto', 'random']}")
    return name


def get_source(name: str = "auto", root: str | os.PathLike | None = None) -> SememeSource:
    resolved = resolve_source_name(name)
    if name == "auto":
        print(
            f"[see] sememe source: {resolved}"
            + (
                " (HowNet dictionary not found: WordNet substitute)"
                if resolved == "wordnet"
                else ""
            )
        )
    if resolved == "hownet":
        return HowNetSource()
    from see.sememes.wordnet import WordNetSource

    return WordNetSource(root)
