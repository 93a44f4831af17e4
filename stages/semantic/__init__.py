"""Semantic deduplication (SemDeDup) and diversity pruning (D4) over document embeddings."""
