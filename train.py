"""Train a character language model: python train.py [experiment=...] [key=value ...].

See conf/train.yaml for the groups; README for examples and sweeps.
"""

import hydra
from omegaconf import DictConfig

import memsig  # noqa: F401  (registers the config resolvers)
from memsig.tasks.rundir import clean_errors
from memsig.tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@clean_errors
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)["metrics"]
    return metrics.get("val/loss")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
