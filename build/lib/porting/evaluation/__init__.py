"""Scoring translations (sacreBLEU) and the grid search over generation settings."""
