"""Baseline recommenders behind one interface (`Recommender.fit` / `.recommend`)."""

from eval.baselines.base import Recommender, fill_ranked, train_popularity
from eval.baselines.popular import MostPop, RecentItems
from eval.baselines.sasrec import SASRec, SASRecConfig

BASELINES = {"mostpop": MostPop, "recent": RecentItems, "sasrec": SASRec}

__all__ = ["BASELINES", "MostPop", "RecentItems", "Recommender", "SASRec", "SASRecConfig", "fill_ranked", "train_popularity"]
