"""Data pipeline of the packaged workloads: local text/jsonl -> clean, de-duplicated splits -> token blocks."""
