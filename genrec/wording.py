"""What the catalog's items (and their users) are called in prompts, reasoning traces and teacher instructions.

Why: genrec was built on job data, and a product or movie catalog should not read "Last viewed: job 3 'End Mill'".
The noun is a prompt setting (`PromptConfig.item_noun`, saved with every trace folder and model): 'auto' takes the
catalog's (`Catalog.noun`: "job" when the dataset's name contains 'job', as jobs-synth and jobs-kaggle, else "item"),
and a stage that loads data saves the noun it used, so later stages and inference word prompts the same way. Job data
keeps the wording every earlier model was trained on, byte for byte; a folder saved before the setting existed reads
as "job". Templates name the forms below in braces; `fill` replaces only those, so user text that holds braces is
never touched.
"""

from __future__ import annotations

import functools
import re

AUTO = "auto"
DEFAULT_NOUN = "job"  # a Catalog built in code (not by the loader) is a job catalog, as before
_NOUN_RE = re.compile(r"^[A-Za-z][A-Za-z -]*(/[A-Za-z][A-Za-z -]*)?$")


def check_item_noun(noun: str) -> str:
    """`noun` if it is 'auto', a word ('item', 'movie') or 'singular/plural' ('person/people'); else ValueError."""
    if not isinstance(noun, str) or not noun.strip():
        raise ValueError(f"item_noun must be a word such as 'item' or 'job' (or 'auto'), got {noun!r}")
    noun = noun.strip()
    if noun != AUTO and not _NOUN_RE.match(noun):
        raise ValueError(
            f"item_noun must be letters, spaces or hyphens, optionally 'singular/plural' (e.g. 'item', "
            f"'person/people'), or 'auto'; got {noun!r}"
        )
    return noun


def dataset_noun(dataset_name: str) -> str:
    """What 'auto' calls a dataset's items (`Catalog.noun`, set by the loader): "job" when its name contains 'job'."""
    return "job" if "job" in dataset_name.lower() else "item"


def _plural(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


@functools.lru_cache(maxsize=64)
def _forms(noun: str) -> tuple[tuple[str, str], ...]:
    noun = check_item_noun(noun)
    if noun == AUTO:
        raise ValueError("noun_forms needs a resolved noun, not 'auto' (see PromptConfig.noun)")
    singular, _, plural = noun.partition("/")
    plural = plural or _plural(singular)
    job = singular.lower() == "job"
    person = "candidate" if job else "user"
    return (("noun", singular), ("nouns", plural), ("Noun", singular[:1].upper() + singular[1:]),
            ("Nouns", plural[:1].upper() + plural[1:]), ("person", person), ("Person", person[:1].upper() + person[1:]),
            ("seeker", "job seeker" if job else "user"))


def noun_forms(noun: str) -> dict[str, str]:
    """Template fields: noun / nouns / Noun / Nouns; person / Person (who views them in prompts: 'candidate' for
    jobs, else 'user') and seeker (the LLM teacher's word for them: 'job seeker', else 'user')."""
    return dict(_forms(noun))


def fill(template: str, noun: str) -> str:
    """`template` with the `noun_forms` fields in braces replaced (other braces kept). Cached per noun: it runs for
    every prompt render and trace block."""
    for key, value in _forms(noun):
        template = template.replace("{" + key + "}", value)
    return template
