"""Small models and data for examples, as ``lightning.pytorch.demos``: `Transformer` and `WikiText2`."""

from savepoint.demos.transformer import Dictionary, PositionalEncoding, Transformer, WikiText2, tokenize

__all__ = ["Dictionary", "PositionalEncoding", "Transformer", "WikiText2", "tokenize"]
