"""The work behind the Hydra entry points (``train.py``, ``probe.py``)."""
