"""The dlt contender: dlt's ``rest_api`` source -> parquet files (filesystem destination).

Runs in the benchmark's own environment (``benchmarks/.venv-dlt``, dlt pinned), not in cfstream's:

    benchmarks/.venv-dlt/bin/python benchmarks/dlt_pipeline.py --url URL --out DIR

Prints one JSON line: ``seconds`` (``pipeline.run``: extract, normalize, load), ``setup_seconds``
(building the source and pipeline), ``import_seconds`` (``import dlt``) and the rows loaded per
table. The configuration is what dlt's documentation shows for a cursor-paginated API with a parent
resource (the channels) and a child resource per channel; nothing is tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import time

t_import = time.perf_counter()
import dlt  # type: ignore[import-not-found]  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # type: ignore[import-not-found]  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - t_import


def main() -> None:
    """Run one import and print its timings as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    t0 = time.perf_counter()
    source = rest_api_source(
        {
            "client": {
                "base_url": args.url,
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resource_defaults": {
                "write_disposition": "append",
                "endpoint": {"data_selector": "items", "params": {"limit": 100}},
            },
            "resources": [
                {"name": "channels", "endpoint": {"path": "channels"}},
                {
                    "name": "docs",
                    "primary_key": "id",
                    "endpoint": {
                        "path": "channels/{resources.channels.id}/docs",
                    },
                },
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="cfstream_bench",
        destination=dlt.destinations.filesystem(bucket_url="file://" + os.path.abspath(args.out)),
        dataset_name="bench",
        pipelines_dir=os.path.join(os.path.abspath(args.out), "_pipelines"),
    )
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - t1
    counts = dict(pipeline.last_trace.last_normalize_info.row_counts)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "setup_seconds": setup,
                "import_seconds": IMPORT_SECONDS,
                "rows": counts,
                "dlt": dlt.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
