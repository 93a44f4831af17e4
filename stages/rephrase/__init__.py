"""Synthetic rephrasing: the ``rephrase`` stage, its prompt library, backends and post-processing."""
