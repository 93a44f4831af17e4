"""Deduplication stages: exact (normalised-text hash) now; MinHash near-duplicates later."""
