"""Recipe "Connector Configuration": load ``connectors.yaml`` with ``${ENV}`` expansion.

    python examples/seed/config_loading.py [--config connectors.yaml] [--dataset kb.lance] [--run]

Prints the enabled connectors (secrets masked). With ``--run`` it converts the file to cfstream's
own config (``load_connectors_config``) and runs it as one pipeline: every enabled connector's
Source, read concurrently into the dataset, cursors saved after each commit. Unlike the guide's
recipe, an unset ``${VAR}`` is an error naming it (not an empty string).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cfstream.config import build_pipeline
from cfstream.connectors import load_connector_config, load_connectors_config
from cfstream.contract.report import RunReport

HERE = Path(__file__).resolve().parent


async def main(argv: list[str] | None = None) -> tuple[dict[str, Any], RunReport | None]:
    """Load the file; returns it (expanded) and, with ``--run``, the run report."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(HERE / "connectors.yaml"))
    p.add_argument("--dataset", default=None, help="overrides the file's `dataset:`")
    p.add_argument("--run", action="store_true", help="import with cfstream's pipeline")
    args = p.parse_args(argv)

    # Load configuration
    config = load_connector_config(args.config)
    for name, settings in config["connectors"].items():
        state = "enabled" if settings.get("enabled", False) else "disabled"
        print(f"{name}: {state}, sync options {settings.get('sync_options', {})}")

    report = None
    if args.run:
        cf_config = load_connectors_config(args.config, dataset=args.dataset)
        for spec in cf_config.sources.values():
            print(f"  source {spec.name}: {spec.describe_options()}")
        report = await build_pipeline(cf_config).run()
        print(report)
    return config, report


if __name__ == "__main__":
    asyncio.run(main())
