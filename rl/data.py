"""The RL prompt dataset: one row per (user, history, target) with the prompt text and the target SID codes.

TRL passes dataset columns to reward functions as keyword arguments, so the target travels as `target_codes`.
The prompt is built by `genrec.prompts.build_prompt` with the model's own PromptConfig, so RL sees exactly the
prompts of SFT and evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from genrec.data.schema import Catalog, Example
from rl.reward_funcs import TARGET_COLUMN
from sid_tokenizer.sidmap import SIDMap


def build_rl_dataset(
    examples: Sequence[Example],
    catalog: Catalog,
    sid_map: SIDMap,
    tokenizer,
    prompt_cfg=None,
    *,
    max_examples: int | None = None,
    seed: int = 0,
):
    """A `datasets.Dataset` with columns prompt, target_codes, target, user_id.

    Examples whose target has no SID raise ValueError (a target the model can never produce would silently
    teach nothing). `max_examples` keeps a seeded random subset.
    """
    from datasets import Dataset

    from genrec.prompts import PromptConfig, build_prompt

    prompt_cfg = prompt_cfg or PromptConfig()
    examples = list(examples)
    if not examples:
        raise ValueError("no examples to build the RL dataset from")
    if max_examples is not None and 0 < max_examples < len(examples):
        examples = random.Random(seed).sample(examples, max_examples)
    missing = [e for e in examples if e.target not in sid_map]
    if missing:
        e = missing[0]
        raise ValueError(
            f"{len(missing)} RL examples have a target without a SID, e.g. user {e.user_id!r} -> item {e.target!r}; "
            "use the SID map fitted on this catalog"
        )
    rows = {"prompt": [], TARGET_COLUMN: [], "target": [], "user_id": []}
    for e in examples:
        rows["prompt"].append(build_prompt(e, catalog, sid_map, tokenizer, prompt_cfg))
        rows[TARGET_COLUMN].append(list(sid_map.codes(e.target)))
        rows["target"].append(e.target)
        rows["user_id"].append(e.user_id)
    return Dataset.from_dict(rows)
