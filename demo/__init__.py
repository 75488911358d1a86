"""The built-in demo: a deterministic synthetic audio suite and the small encoders trained on it."""
