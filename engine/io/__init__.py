"""Bytes in and out: storage (fsspec), decoders, one reader per input format, Parquet writers, token counts."""
