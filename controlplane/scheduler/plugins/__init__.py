"""Filter and score plugins of the scheduling framework."""
