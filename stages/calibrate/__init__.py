"""``tokenmill calibrate``: per-language parameter files derived from clean reference text and a web
sample (documents.py: the texts; derive.py: the rules; files.py: the YAML; cli.py: the command)."""
