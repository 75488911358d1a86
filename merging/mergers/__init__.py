"""Merge methods beyond the paper's linear interpolation (``merging.combine.Linear``): one
module each, named by ``conf/merge/*.yaml``."""
