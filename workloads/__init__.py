"""Packaged workloads: specs, estimates, launch plans and entry points for pre-train, fine-tune, evaluate, inference."""
