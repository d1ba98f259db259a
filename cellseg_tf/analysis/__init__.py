"""Analysis stage: evaluation against masks, per-cell morphometry, statistics over evaluation reports."""
