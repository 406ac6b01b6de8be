"""genrec: generative job recommendation with semantic IDs, a reasoning SLM and SAPO."""

__version__ = "0.1.0"
