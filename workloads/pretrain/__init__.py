"""Pre-train a causal LM built from a config, on DeepSpeed (``python -m workloads.pretrain``)."""
