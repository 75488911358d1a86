"""``python -m search``: an Optuna study over merge weights, on validation scores."""
