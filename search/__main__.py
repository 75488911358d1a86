"""``python -m search [trials=N] [pair=...] [key=value ...]``: the study conf/search says."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from report.resolvers import register_repo
from search.study import search

register_repo()


@hydra.main(version_base="1.3", config_path="../conf/search", config_name="config")
def main(cfg: DictConfig) -> float:
    summary = search(OmegaConf.to_container(cfg, resolve=True), cfg.progress)
    print(json.dumps(summary, indent=2))
    return float(summary["test"].get("avg", float("nan")))


if __name__ == "__main__":
    main()
