"""Memory signature of a trained model: python probe.py ckpt=<path> [probe=...] [data=...].

See conf/probe.yaml; README for examples.
"""

import hydra
from omegaconf import DictConfig

import memsig  # noqa: F401  (registers the config resolvers)
from memsig.tasks.probe import probe
from memsig.tasks.rundir import clean_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="probe")
@clean_errors
def main(cfg: DictConfig) -> None:
    probe(cfg)


if __name__ == "__main__":
    main()
