"""Speech corpora, audio features and the speech DataModule (for the LAS recogniser)."""

from memsig.data.speech.audio import AudioError, read_audio
from memsig.data.speech.corpora import (
    EspeakCorpus,
    FSDDCorpus,
    LibriSpeechCorpus,
    LibriVoxCorpus,
    ManifestCorpus,
    SpeechCorpus,
    WSJSpeechCorpus,
)
from memsig.data.speech.datamodule import SpeechDataModule
from memsig.data.speech.features import LogMel, SpecAugment
from memsig.data.speech.manifest import Utterance, read_manifest, write_manifest

__all__ = [
    "AudioError",
    "EspeakCorpus",
    "FSDDCorpus",
    "LibriSpeechCorpus",
    "LibriVoxCorpus",
    "LogMel",
    "ManifestCorpus",
    "SpecAugment",
    "SpeechCorpus",
    "SpeechDataModule",
    "Utterance",
    "WSJSpeechCorpus",
    "read_audio",
    "read_manifest",
    "write_manifest",
]
