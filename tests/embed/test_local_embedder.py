"""``LocalEmbedder``: wordllama's model from its wheel, offline, 256 wide, float32, unit length."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import numpy as np

from cfstream.embed import LocalEmbedder, embedder_from_config

ROOT = Path(__file__).resolve().parents[2]


def test_vectors_are_256_wide_float32_and_normalised() -> None:
    emb = LocalEmbedder()
    assert emb.name == "local:wordllama/l2_supercat_256" and emb.dim == 256
    out = anyio.run(
        emb.embed,
        ["brown butter nectarine tart", "stone fruit dessert for summer", "jazz bass album"],
    )
    assert out.dtype == np.float32 and out.shape == (3, 256)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # a real model: the dessert is nearer the tart than the album is
    assert float(out[0] @ out[1]) > float(out[0] @ out[2])
    assert anyio.run(emb.embed, []).shape == (0, 256)


def test_loaded_once_per_process_and_truncatable() -> None:
    assert LocalEmbedder().load() is LocalEmbedder().load()
    small = embedder_from_config("local", dim=64)
    assert small.name == "local:wordllama/l2_supercat_64"
    v = anyio.run(small.embed, ["hello"])
    assert v.shape == (1, 64) and np.isclose(np.linalg.norm(v), 1.0, atol=1e-5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_loads_and_embeds_with_the_network_impossible(tmp_path: Path) -> None:
    """A fresh process with no network: proxies at a closed local port, Hugging Face offline,
    an empty HOME/cache, and every socket connection or DNS lookup refused and recorded."""
    script = textwrap.dedent(
        """
        import json, socket, sys
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import anyio
        from cfstream.embed import LocalEmbedder
        out = anyio.run(LocalEmbedder().embed, ["offline works", "no download"])
        print(json.dumps({"shape": list(out.shape), "dtype": str(out.dtype), "attempts": attempts}))
        """
    )
    port = _closed_port()
    proxy = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, 256], "dtype": "float32", "attempts": []}
