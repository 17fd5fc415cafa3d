"""Shared training machinery of pre-train and fine-tune: runtime, DeepSpeed engine, loop, checkpoints."""
