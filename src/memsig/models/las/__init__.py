"""Listen, Attend and Spell: listener, attention, speller, decoding, alignment."""

from memsig.models.las.module import LAS

__all__ = ["LAS"]
