"""Embedding backends: one interface, chosen once (see `select.select_backend`)."""

from animalclap_edge.backends.base import BackendError, EmbeddingBackend, checked_embeddings
from animalclap_edge.backends.select import BackendChoice, select_backend

__all__ = [
    "BackendChoice",
    "BackendError",
    "EmbeddingBackend",
    "checked_embeddings",
    "select_backend",
]
