"""Exports: python export.py what=lstmvis ckpt=<path> | what=signature signature=<path>.

See conf/export.yaml; README for examples.
"""

import hydra
from omegaconf import DictConfig

import memsig  # noqa: F401  (registers the config resolvers)
from memsig.tasks.export import export
from memsig.tasks.rundir import clean_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@clean_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
