"""Reasoning traces for stage-2 SFT: a grounded template teacher, an LLM teacher, and the trace dataset."""
