"""Pure domain types shared by every part of gpupool (no I/O)."""
