"""Data layer: RecBole atomic files, MiniOneRec CSV, splits, and the synthetic job market."""
