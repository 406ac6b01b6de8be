"""Prompt building: history formats, token budget truncation from the oldest side, chat template, errors."""

from __future__ import annotations

import dataclasses

import pytest

from genrec.data.schema import Example
from genrec.modeling import load_model_and_tokenizer
from genrec.prompts import PromptConfig, build_prompt, count_tokens
from tests.helpers_tiny import tiny_catalog, tiny_model_dir, tiny_sid_map

CAT, SIDS = tiny_catalog(), tiny_sid_map()
_, TOK = load_model_and_tokenizer(tiny_model_dir())
HIST = ("j000", "j001", "j002", "j105", "j006", "j007")
EX = Example("u1", HIST, "j008", "Skills: python, sql. Location: Boston.")
PROF = PromptConfig(include_profile=True)


def test_both_format_shows_sids_and_titles_not_target():
    assert "Skills" not in build_prompt(EX, CAT, SIDS, TOK)  # the profile is off by default
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(include_profile=True))
    for item in HIST:
        assert SIDS.sid_string(item) in p
        assert CAT.record(item)["title"] in p
    assert SIDS.sid_string("j008") not in p and "ETL Developer" not in p
    assert "Skills: python, sql" in p
    assert p.endswith(f"\n{len(HIST) + 1}. ")  # the next history line's number is the answer cue
    # Oldest first, numbered.
    assert p.index("Data Analyst") < p.index("Database Administrator")
    assert "1. <a_0><b_0> Data Analyst" in p


@pytest.mark.parametrize("fmt", ["sid", "text"])
def test_single_formats(fmt):
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(history_format=fmt))
    assert (SIDS.sid_string("j000") in p) == (fmt == "sid")
    assert ("Data Analyst" in p) == (fmt == "text")


def test_item_template_and_profile_switch():
    cfg = PromptConfig(item_template="{title} at {company}, {city}", include_profile=False)
    p = build_prompt(EX, CAT, SIDS, TOK, cfg)
    rec = CAT.record("j002")
    assert f"{rec['title']} at {rec['company']}, {rec['city']}" in p
    assert "Skills" not in p


def test_max_history_keeps_most_recent():
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(prompt_max_history=2))
    assert "Pediatric Nurse" not in p and "Statistician" in p and "Database Administrator" in p
    assert "1. <a_0><b_6> Statistician" in p


def test_budget_drops_oldest_items_first():
    full = build_prompt(EX, CAT, SIDS, TOK, PROF)
    n_full = count_tokens(full, TOK)
    budget = n_full - 12
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(max_prompt_tokens=budget, include_profile=True))
    assert count_tokens(p, TOK) <= budget
    assert "Database Administrator" in p and "Data Analyst" not in p  # newest kept, oldest gone
    assert "Skills: python, sql" in p  # profile kept while history can shrink
    # Budgets only one item fits: then the profile is shortened.
    one = build_prompt(Example("u1", HIST[-1:], "j008", EX.profile), CAT, SIDS, TOK, PROF)
    tight = count_tokens(one, TOK) - 4
    p = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(max_prompt_tokens=tight, include_profile=True))
    assert count_tokens(p, TOK) <= tight and "Database Administrator" in p and "Statistician" not in p
    assert "Location: Boston" not in p


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="max_prompt_tokens=20"):
        build_prompt(EX, CAT, SIDS, TOK, PromptConfig(max_prompt_tokens=20))


def test_unknown_history_item_is_named():
    bad = dataclasses.replace(EX, history=("j000", "zzz"))
    with pytest.raises(ValueError, match="'zzz' has no SID"):
        build_prompt(bad, CAT, SIDS, TOK)


def test_chat_template(tmp_path):
    cfg = PromptConfig(use_chat_template=True)
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt(EX, CAT, SIDS, TOK, cfg)
    _, tok = load_model_and_tokenizer(tiny_model_dir())
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    p = build_prompt(EX, CAT, SIDS, tok, cfg)
    assert p.startswith("<|system|>\nYou are a job recommender") and p.endswith("<|assistant|>\n")
    assert SIDS.sid_string("j007") in p and "Answer:" not in p


def test_reasoning_switch_and_config_roundtrip(tmp_path):
    direct = build_prompt(EX, CAT, SIDS, TOK, PromptConfig(reasoning=False))
    assert "semantic ID only" in direct and "step by step" not in direct
    cfg = PromptConfig(history_format="sid", prompt_max_history=3)
    cfg.save(tmp_path)
    assert PromptConfig.load(tmp_path) == cfg
    with pytest.raises(ValueError, match="history_format"):
        PromptConfig(history_format="titles")


@pytest.mark.parametrize("command, texts", [
    ("traces", ["Keep at most this many of the most recent history items",
                "Per split: a random sample of at most this many examples",
                "Grounded teacher: 'evidence'"]),
    ("build-model", ["Hidden size of the tiny Llama", "Byte-level BPE vocabulary"]),
])
def test_config_fields_have_help_text(command, texts, capsys):
    """PromptConfig, TraceConfig and TinyModelConfig carry their help in field metadata, so `--help` shows it."""
    from genrec.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in texts:
        assert text in out, text


def test_every_command_prints_its_help(capsys):
    """`genrec <command> --help` renders for every command: argparse expands '%' in help strings, so a stray one
    (e.g. '20% faster') crashes the help with a TypeError instead of printing it."""
    from genrec.cli import COMMANDS, main

    for command in COMMANDS:
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0, command
        assert f"genrec {command}" in capsys.readouterr().out, command


def test_trace_blocks_cite_only_the_lines_the_budget_keeps():
    """With a budget that drops the oldest lines, the grounded teacher gets the shown history only: the trace's
    blocks are those of the truncated example (line numbers start at the first line shown), and `fit_prompt`
    reports how many items the prompt shows."""
    from genrec.prompts import fit_prompt
    from genrec.traces.dataset import build_trace_rows
    from genrec.traces.grounded import GroundedConfig, grounded_blocks

    cfg = PromptConfig(max_prompt_tokens=count_tokens(build_prompt(EX, CAT, SIDS, TOK), TOK) - 12)
    prompt, shown = fit_prompt(EX, CAT, SIDS, TOK, cfg)
    assert 1 <= shown < len(HIST) and prompt == build_prompt(EX, CAT, SIDS, TOK, cfg)
    teacher_cfg = GroundedConfig(history_lines=cfg.prompt_max_history, cite_titles=True, style="evidence")
    seen = []

    def teacher(batch):
        seen.extend(batch)
        return [grounded_blocks(ex, CAT, SIDS, teacher_cfg) for ex in batch]

    rows = build_trace_rows([EX], CAT, SIDS, TOK, cfg, teacher, progress=False)
    assert seen[0].history == HIST[-shown:] and rows["prompt"] == [prompt]
    truncated = dataclasses.replace(EX, history=HIST[-shown:])
    assert rows["blocks"][0] == grounded_blocks(truncated, CAT, SIDS, teacher_cfg)
    assert rows["blocks"][0] != grounded_blocks(EX, CAT, SIDS, teacher_cfg)  # the full history reads differently
    assert fit_prompt(EX, CAT, SIDS, TOK)[1] == len(HIST)  # no budget pressure: every item shown


def test_a_title_column_under_another_name_is_the_items_title():
    """A catalog whose title column is `movie_title` (RecBole's ml-100k) shows and cites the title alone, as a
    catalog with `title` does; a catalog with no title-like column still renders every field."""
    from genrec.data.schema import Catalog
    from genrec.traces.grounded import grounded_blocks

    fields = {("movie_title" if k == "title" else k): v for k, v in CAT.fields.items()}
    movies = Catalog(list(CAT.item_ids), fields)
    assert movies.title_field == "movie_title" and CAT.title_field == "title"
    p = build_prompt(EX, movies, SIDS, TOK)
    assert p == build_prompt(EX, CAT, SIDS, TOK)  # the same lines as with a `title` column
    assert "company:" not in p and "1. <a_0><b_0> Data Analyst\n" in p
    blocks = " ".join(grounded_blocks(EX, movies, SIDS))
    assert '"Database Administrator"' in blocks and "movie_title:" not in blocks
    untitled = Catalog(list(CAT.item_ids), {k: v for k, v in CAT.fields.items() if k != "title"})
    assert untitled.title_field is None
    assert f"company: {CAT.record('j000')['company']}" in build_prompt(EX, untitled, SIDS, TOK)
    named = Catalog(list(CAT.item_ids), {"brand_name": fields["company"], "product_name": fields["movie_title"]})
    assert named.title_field == "product_name"  # 'brand_name' is not a title
