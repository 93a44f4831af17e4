"""``tokenmill mix MIX.yaml [--engine ray|spark|local] [--output PATH]`` (registered in pyproject.toml)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("mix", help="tokenize curated outputs into shuffled Megatron shards, weighted and upsampled",
                              description=__doc__)
    p.add_argument("config", help="the mix YAML (sources, target_tokens, tokenizer, output, seed)")
    p.add_argument("--engine", choices=["ray", "spark", "local"], help="default: the config's engine (ray)")
    p.add_argument("--output", help="write here instead of output.path")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from tokenmill.engine.config import ConfigError
    from tokenmill.engine.durable.lease import LeaseHeld, LeaseLost
    from tokenmill.mix.config import load_mix_config
    from tokenmill.mix.run import run_mix

    path = Path(args.config)
    try:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError([("(file)", f"cannot read the mix config: {e}")], str(path)) from None
        if args.output and isinstance(data, dict):
            data.setdefault("output", {})["path"] = str(Path(args.output).resolve()) if "://" not in args.output else args.output
        cfg = load_mix_config(data, path)
        run_mix(cfg, engine=args.engine, where=str(path))
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except LeaseHeld as e:
        print(f"{e}; this mix did nothing (exit 75: try again later)", file=sys.stderr)
        return 75
    except LeaseLost as e:
        print(f"{e} (exit 75: finished shards are kept; run again to finish)", file=sys.stderr)
        return 75
    return 0
