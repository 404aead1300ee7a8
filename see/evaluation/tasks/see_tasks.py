"""Loaders for the offline task configs: local files -> the hub datasets' fields.

This file is copied next to the rendered YAML files, which reference it with `!function`.
Prompts, targets and metrics stay lm-eval's own: they are imported from lm-eval's task code.
"""

import re

import datasets
from lm_eval.tasks.wikitext.preprocess_wikitext import (  # noqa: F401  (used by the YAML)
    process_results,
    wikitext_detokenizer,
)

# a top-level WikiText heading line " = Title = " starts a new document
_TITLE_LINE = re.compile(r"(?m)^(?= = [^=].* = \n)")


def wikitext_documents(data_file: str, **_metadata) -> datasets.DatasetDict:
    """EleutherAI/wikitext_document_level's test split, rebuilt from wiki.test.raw."""
    with open(data_file, encoding="utf-8") as f:
        text = f.read()
    pages = [page for page in _TITLE_LINE.split(text) if page.strip()]  # drop the empty head
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict({"page": pages})})
