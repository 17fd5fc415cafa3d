"""Serve a local model with vLLM's OpenAI-compatible server (``python -m workloads.inference``)."""
