"""Token -> n units (sememes, morphemes, characters, PAD) for SEE, and the mapping report.

Decisions (each an option of `build_unit_map`, documented in the README):
- Normalisation: the token's text (decoded by its tokenizer, so byte-level BPE "Ġ"/"Ċ", and
  SentencePiece "▁" become spaces) minus WordPiece "##" and surrounding spaces, lowercased.
- Units, in this order, the first n kept: up to `max_sememes` (default n - 1) ranked sememes of
  the word (`s:` units; the source tries the word, then its lemma); the word's morphemes (`m:`
  stem, then prefix, then suffix, by a fixed English affix list, split only where the stem is a
  word of the vocabulary); a form unit (`f:space`, `f:cap`, `f:spacecap`: leading space and
  capitalisation, which tell " The" from "the"); PAD. Tokens that are not alphabetic words (numbers,
  punctuation, code, other scripts) get character units (`c:x`) instead of morphemes.
- Inventory cap: PAD is always a unit; sememes are kept while they fit in half of
  `max_units` (else the most used ones); morpheme/character units are kept by how many tokens
  use them until `max_units`; rarer units map to one of `hash_buckets` hashed units (`h:k`,
  blake2b of the unit).
- Separation: when several tokens share a unit tuple, the lowest id keeps it and each other one
  gets a token-specific hashed unit (blake2b of the token text and a salt) in its last slot (two
  last slots if one is not enough), so no two tokens share an embedding (`separate=False` keeps
  the collisions).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import torch

PAD = "<pad>"
MARKERS = ("##",)
PREFIXES = ("over", "under", "inter", "anti", "non", "dis", "mis", "pre", "sub", "un", "re")
SUFFIXES = (
    "ations",
    "ation",
    "ness",
    "ment",
    "able",
    "ible",
    "less",
    "tion",
    "sion",
    "ings",
    "ing",
    "ful",
    "ous",
    "ive",
    "ist",
    "ism",
    "ity",
    "ize",
    "ise",
    "est",
    "ers",
    "ed",
    "er",
    "ly",
    "al",
    "es",
    "s",
)


def normalize_token(text: str) -> str:
    """Token text -> lookup word: strip markers and spaces, lowercase."""
    text = text.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
    text = text.strip()
    for marker in MARKERS:
        if text.startswith(marker):
            text = text[len(marker) :]
    return text.strip().lower()


def morphemes(word: str, lexicon: frozenset[str] = frozenset()) -> list[str]:
    """Stem, prefix, suffix of an alphabetic word (`m:` units; affixes carry a hyphen).

    An affix is split off only when what remains (or it plus "e") is itself a word of
    `lexicon` (the vocabulary's own words), so "playing" -> play + -ing but "water" stays whole.
    """

    def known(stem: str, min_len: int = 4) -> str | None:
        return next((s for s in (stem + "e", stem) if len(s) >= min_len and s in lexicon), None)

    prefix = next((p for p in PREFIXES if word.startswith(p) and known(word[len(p) :])), "")
    rest = word[len(prefix) :]
    # 3-letter stems only before a plural "s" (dogs -> dog; water is not wat + -er)
    suffix = next(
        (s for s in SUFFIXES if rest.endswith(s) and known(rest[: -len(s)], 3 if s == "s" else 4)),
        "",
    )
    stem = known(rest[: -len(suffix)], 3) if suffix else rest
    return (
        [f"m:{stem}"] + ([f"m:{prefix}-"] if prefix else []) + ([f"m:-{suffix}"] if suffix else [])
    )


def form_unit(text: str) -> str | None:
    """Leading space and capitalisation of a word token (`f:` units), None for a bare word."""
    stripped = text.lstrip()
    flags = ("space" if stripped != text else "") + ("cap" if stripped[:1].isupper() else "")
    return f"f:{flags}" if flags else None


def is_word(text: str) -> bool:
    return text.isascii() and text.isalpha()


def hashed(text: str, buckets: int, salt: int = 0) -> str:
    # blake2b, not crc32: crc32 is affine in its input, so salted variants of one text are
    # correlated and two hashed slots would reach only `buckets` pairs instead of buckets**2
    digest = hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest()
    return f"h:{int.from_bytes(digest, 'little') % buckets}"


def randomized_sememes(cache: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """word -> as many sememes as it has, drawn at random from all the words' sememes."""
    inventory = sorted({s for labels in cache.values() for s in labels})
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for word in sorted(cache):
        picks = torch.randperm(len(inventory), generator=generator)[: len(cache[word])]
        out[word] = [inventory[i] for i in picks.tolist()]
    return out


@dataclass
class UnitMap:
    units: list[str]  # unit id -> unit name
    token_units: torch.Tensor  # V x n unit ids (int32)
    report: dict = field(default_factory=dict)
    token_unit_names: list[tuple[str, ...]] = field(default_factory=list)


def raw_units(
    text: str, n: int, source, max_sememes: int, cache: dict, lexicon: frozenset[str]
) -> tuple[list[str], int]:
    """(units before capping and separation, number of sememes) of one token text."""
    word = normalize_token(text)
    sememes: list[str] = []
    if source is not None and is_word(word) and max_sememes > 0:
        if word not in cache:
            cache[word] = [f"s:{label}" for label in source.sememes(word)]
        sememes = cache[word][:max_sememes]
    if is_word(word):
        pieces = morphemes(word, lexicon) + [form_unit(text.replace("Ġ", " ").replace("▁", " "))]
        pieces = [p for p in pieces if p]
    else:
        pieces = [f"c:{ch}" for ch in (word or text)][: n - len(sememes)]
    units = (sememes + pieces)[:n]
    return units + [PAD] * (n - len(units)), len(sememes)


def build_unit_map(
    texts: list[str],
    *,
    n: int = 3,
    source=None,
    max_sememes: int | None = None,
    max_units: int = 8192,
    hash_buckets: int = 512,
    separate: bool = True,
    random_sememes: bool = False,
    seed: int = 0,
) -> UnitMap:
    """Units of every token text (index = token id); `source=None` gives morpheme-only SEE.

    `n` is the number of slots filled here (SEE with a token slot asks for its order - 1).
    `random_sememes`: the control for the sememe prior: every word keeps its number of
    sememes, but they are drawn at random (per word, seeded) from the sememes the vocabulary
    uses, so the unit structure stays and only the meaning goes.
    """
    if n < 1:
        raise ValueError(f"number of unit slots must be >= 1, got {n}")
    if hash_buckets < 2 or max_units < 2:
        raise ValueError(
            f"hash_buckets and max_units must be >= 2, got {hash_buckets}, {max_units}"
        )
    max_sememes = n - 1 if max_sememes is None else max_sememes
    cache: dict[str, list[str]] = {}
    lexicon = frozenset(w for w in map(normalize_token, texts) if is_word(w))
    rows, n_sememes = zip(
        *(raw_units(t, n, source, max_sememes, cache, lexicon) for t in texts), strict=True
    )
    if random_sememes:
        cache = randomized_sememes(cache, seed)
        rows, n_sememes = zip(
            *(raw_units(t, n, source, max_sememes, cache, lexicon) for t in texts), strict=True
        )
    # cap the inventory by how many tokens use each unit: sememes first (all of them while
    # they fit in half the cap, else the most used), morpheme/character units in the rest
    sememes = Counter(u for row in rows for u in set(row) if u.startswith("s:"))
    if len(sememes) + 1 > max_units // 2:
        kept_sememes = {u for u, _ in sememes.most_common(max_units // 2)}
    else:
        kept_sememes = set(sememes)
    counts = Counter(u for row in rows for u in set(row) if u != PAD and not u.startswith("s:"))
    kept = {u for u, _ in counts.most_common(max(max_units - len(kept_sememes) - 1, 0))}
    kept |= kept_sememes
    keep = lambda u: u == PAD or u in kept  # noqa: E731
    rows = [[u if keep(u) else hashed(u, hash_buckets) for u in row] for row in rows]
    before = Counter(map(tuple, rows))
    collided_before = sum(c for c in before.values() if c > 1)
    if separate:
        rows = separate_collisions(rows, texts, hash_buckets)
    after = Counter(map(tuple, rows))
    names = sorted({u for row in rows for u in row}, key=lambda u: (u != PAD, u))
    index = {u: i for i, u in enumerate(names)}
    table = torch.tensor([[index[u] for u in row] for row in rows], dtype=torch.int32)
    vocab = len(texts)
    words = [i for i, t in enumerate(texts) if is_word(normalize_token(t))]
    source_label = getattr(source, "name", None)
    if random_sememes:
        source_label = f"random ({source_label} counts)"
    report = {
        "vocab_size": vocab,
        "order_n": n,
        "sememe_source": source_label,
        "tokens_with_sememes": sum(1 for k in n_sememes if k),
        "vocab_coverage": sum(1 for k in n_sememes if k) / vocab,
        "word_token_share": len(words) / vocab,
        "word_token_coverage": sum(1 for i in words if n_sememes[i]) / max(len(words), 1),
        "n_units": len(names),
        "n_sememe_units": sum(1 for u in names if u.startswith("s:")),
        "n_form_units": sum(1 for u in names if u.startswith("f:")),
        "n_morpheme_units": sum(1 for u in names if u.startswith("m:")),
        "n_char_units": sum(1 for u in names if u.startswith("c:")),
        "n_hashed_units": sum(1 for u in names if u.startswith("h:")),
        "collision_rate_before": collided_before / vocab,
        "collision_rate_after": sum(c for c in after.values() if c > 1) / vocab,
    }
    return UnitMap(names, table, report, [tuple(r) for r in rows])


def separate_collisions(rows: list[list[str]], texts: list[str], buckets: int) -> list[list[str]]:
    """Give every token after the first in a shared tuple a token-specific hashed unit."""
    used: set[tuple[str, ...]] = set()
    out = []
    for token_id, row in enumerate(rows):
        candidate = tuple(row)
        salt = 0
        while candidate in used:
            key = f"{token_id}:{texts[token_id]}"
            slots = 1 if salt < buckets else 2  # two hashed slots once one is crowded
            tail = [hashed(key, buckets, salt + 10_000 * j) for j in range(slots)]
            candidate = (*row[: len(row) - slots], *tail)
            salt += 1
            if salt > 64 * buckets:
                raise RuntimeError(f"cannot separate token {token_id} ({texts[token_id]!r})")
        used.add(candidate)
        out.append(list(candidate))
    return out
