"""Synthetic rephrasing (issue 10, in progress): the prompt library and post-processing."""
