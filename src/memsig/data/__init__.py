"""Corpora and DataModules."""

from memsig.data.corpora import Corpus, PTBCorpus, ShakespeareWorks, Splits, TextCorpus
from memsig.data.io import CorpusError
from memsig.data.text import TextDataModule

__all__ = ["Corpus", "CorpusError", "PTBCorpus", "ShakespeareWorks", "Splits", "TextCorpus", "TextDataModule"]
