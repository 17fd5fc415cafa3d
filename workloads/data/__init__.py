"""Data pipeline of the packaged workloads: local files or hub data sets -> pre-tokenised, memory-mapped shards."""
