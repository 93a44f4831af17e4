"""The executor interface on Spark DataFrames (classic or Spark Connect)."""
