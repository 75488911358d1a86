"""Matchers beyond the paper's exact assignment on correlations (``merging.match.Exact``):
one module each, named by ``conf/match/*.yaml``."""
