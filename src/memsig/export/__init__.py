"""Exports of signatures (CSV, netCDF) and of a model's states (LSTMVis); ``export.py`` runs them."""

from memsig.export.lstmvis import encode_text, write_lstmvis
from memsig.export.signature_table import load_signature_nc, save_signature_nc, signature_dataset, write_signature_csv

__all__ = [
    "encode_text",
    "load_signature_nc",
    "save_signature_nc",
    "signature_dataset",
    "write_lstmvis",
    "write_signature_csv",
]
