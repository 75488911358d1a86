"""``python -m distill [recipe=demo_speech] [key=value ...]``: one student, as conf/distill says."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from distill.resolvers import register_resolvers
from distill.train import distill

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf/distill", config_name="config")
def main(cfg: DictConfig) -> None:
    command = " ".join(["python -m distill", *HydraConfig.get().overrides.task])
    summary = distill(OmegaConf.to_container(cfg, resolve=True), cfg.progress, command)
    minutes = summary["train_seconds"] / 60
    print(
        f"{cfg.out}: {summary['steps']} steps, final loss {summary['final_loss']:.3f}, "
        f"cosine {summary['final_cos']:.3f}, {minutes:.1f} min"
    )


if __name__ == "__main__":
    main()
