"""Evaluate a local model (optionally with an adapter): perplexity and generations (``python -m workloads.evaluate``)."""
