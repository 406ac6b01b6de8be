"""What items are called: noun forms, the loader's 'auto' noun, prompts and grounded blocks on item data, and job
data worded exactly as before."""

from __future__ import annotations

import dataclasses
import json

import pytest

from genrec.data.loader import load_data
from genrec.data.schema import Catalog, Example
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import SYSTEM_PROMPT, PromptConfig, build_prompt
from genrec.traces.grounded import GroundedConfig, grounded_blocks
from genrec.traces.llm import TEACHER_INSTRUCTION
from genrec.wording import check_item_noun, dataset_noun, fill, noun_forms
from tests.helpers_tiny import tiny_catalog, tiny_model_dir, tiny_sid_map, write_tiny_data_dir

CAT, SIDS = tiny_catalog(), tiny_sid_map()
_, TOK = load_model_and_tokenizer(tiny_model_dir())
EX = Example("u1", ("j000", "j001", "j002"), "j008", "Skills: python.")


def _as(noun: str) -> Catalog:
    return dataclasses.replace(CAT, noun=noun)


def test_noun_forms_and_fill():
    assert noun_forms("job") == {"noun": "job", "nouns": "jobs", "Noun": "Job", "Nouns": "Jobs",
                                 "person": "candidate", "Person": "Candidate", "seeker": "job seeker"}
    assert noun_forms("item")["seeker"] == "user"
    assert noun_forms("item")["Nouns"] == "Items" and noun_forms("item")["person"] == "user"
    assert noun_forms("category")["nouns"] == "categories" and noun_forms("box")["nouns"] == "boxes"
    assert noun_forms("person/people")["Nouns"] == "People"
    # only the known fields are replaced: user text with braces is left alone
    assert fill("{Nouns} of {person}: {title} {}", "movie") == "Movies of user: {title} {}"
    assert dataset_noun("jobs-kaggle") == dataset_noun("Jobs-Synth") == "job"
    assert dataset_noun("amazon-industrial-mini") == "item"
    for bad in ("", "  ", "item 2", "it{em}", "a/b/c"):
        with pytest.raises(ValueError, match="item_noun must be"):
            check_item_noun(bad)
    with pytest.raises(ValueError, match="item_noun must be"):
        PromptConfig(item_noun="3 items")
    with pytest.raises(ValueError, match="resolved noun"):
        noun_forms("auto")


def test_job_prompts_read_exactly_as_before():
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(include_profile=True))
    assert p.startswith("Candidate profile:\nSkills: python.\nRecommend the next job for this candidate. Reason step "
                        "by step: one short thought per level of the job's semantic ID, each followed by that level's "
                        "ID token.\nJobs viewed, oldest first:\n1. ")
    direct = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(reasoning=False))
    assert direct.startswith("Recommend the next job for this candidate. Answer with its semantic ID only.\nJobs viewed")
    assert fill(SYSTEM_PROMPT, "job") == "You are a job recommender. Jobs are written as semantic IDs, coarse to fine."
    assert fill(TEACHER_INSTRUCTION, "job").startswith(
        "A job seeker viewed the jobs below (oldest first). They then chose the target job. In 3 to 5 short")
    assert fill(TEACHER_INSTRUCTION, "item").startswith("A user viewed the items below")


def test_item_catalog_prompts_and_blocks_say_item():
    items = _as("item")
    p = build_prompt(EX, items, SIDS, TOK, PromptConfig(include_profile=True))
    assert p.startswith("User profile:\nSkills: python.\nRecommend the next item for this user.")
    head = p.split("\n1. ")[0]
    assert head.endswith("Items viewed, oldest first:") and "job" not in head.lower() and "candidate" not in head
    # the prompt setting overrides the catalog's noun
    movie = build_prompt(EX, items, SIDS, TOK, PromptConfig(item_noun="movie"))
    assert "Movies viewed, oldest first:" in movie and "next movie for this user" in movie
    # grounded blocks: the last viewed line and the lines sharing the area, with the catalog's noun
    blocks = grounded_blocks(Example("u1", ("j000", "j001"), "j002"), items, SIDS)
    job_blocks = grounded_blocks(Example("u1", ("j000", "j001"), "j002"), CAT, SIDS)
    assert blocks[0].startswith('Last viewed: item 2 "') and "past items" in blocks[0]
    assert job_blocks[0] == blocks[0].replace("item 2", "job 2").replace("past items", "past jobs")
    assert "Items 2 and 1 are in this area." in blocks[1] or "items 2 and 1 are in this area." in blocks[1]
    assert "job" not in " ".join(blocks).lower()
    assert grounded_blocks(Example("u1", (), "j002"), items, SIDS, GroundedConfig(style="pointer"))[0] == (
        "No past items to go by.")


def test_loader_names_the_items_and_stages_save_the_resolved_noun(tmp_path):
    jobs = write_tiny_data_dir(tmp_path / "jobs")
    shop = tmp_path / "shop"
    shop.mkdir()
    for f in jobs.iterdir():  # the same data under a name without 'job'
        (shop / f.name.replace("tiny-jobs", "hardware")).write_bytes(f.read_bytes())
    assert load_data(jobs, verbose=False).catalog.noun == "job"
    rec = load_data(shop, verbose=False)
    assert rec.catalog.noun == "item"
    resolved = PromptConfig().resolved(rec.catalog)
    assert resolved.item_noun == "item" and PromptConfig(item_noun="part").resolved(rec.catalog).item_noun == "part"
    resolved.save(tmp_path)
    assert PromptConfig.load(tmp_path) == resolved


def test_a_folder_saved_before_the_setting_loads_as_job_wording(tmp_path):
    old = {f.name: getattr(PromptConfig(), f.name) for f in dataclasses.fields(PromptConfig) if f.name != "item_noun"}
    old["system_prompt"] = "You are a job recommender. Jobs are written as semantic IDs, coarse to fine."
    (tmp_path / "prompt_config.json").write_text(json.dumps(old))
    loaded = PromptConfig.load(tmp_path)
    assert loaded.item_noun == "job" and loaded == PromptConfig(item_noun="job")
    # its prompts on an item catalog keep the wording the model was trained with
    assert "Jobs viewed" in build_prompt(EX, _as("item"), SIDS, TOK, loaded)


def test_recommend_listing_names_the_items():
    from eval.beam import Beam
    from eval.interactive import format_recommendations

    beams = [Beam("j001", -1.0, SIDS.codes("j001"))]
    assert "Top 1 items:" in format_recommendations(beams, _as("item"), SIDS, None, [])
    assert "Top 1 jobs:" in format_recommendations(beams, CAT, SIDS, None, [])
    assert "Top 1 movies:" in format_recommendations(beams, CAT, SIDS, None, [], "movie")
