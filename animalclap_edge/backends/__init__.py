"""Embedding backends: one interface, chosen once (see `select.select_backend`)."""

from animalclap_edge.backends.base import EmbeddingBackend
from animalclap_edge.backends.select import BackendChoice, select_backend

__all__ = ["BackendChoice", "EmbeddingBackend", "select_backend"]
