"""The executor interface on Ray Data (the default engine)."""
