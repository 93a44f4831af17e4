"""Heuristic quality filters (Gopher quality and repetition, C4, FineWeb) with per-language parameters."""
