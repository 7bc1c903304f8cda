"""R4: a distinctive token never leaks (logs at DEBUG, errors, reports, dead letters, state, dataset
files), another host never receives the Authorization header, vault symlinks leading outside the
vault are not followed, and YAML tags that construct Python objects are rejected."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    FakeServer,
    check_dataset,
    items_config,
    record,
    rows_by_source_id,
    run_sync,
    subprocess_env,
    write_config,
)
from fakeapi import Settings

from cfstream.contract.deadletter import read_dead_letters
from cfstream.secrets import Redactions, Secret, register_secret

TOKEN = "tok-RELIABILITY-5f3c9a7e1d2b4c68"
SECRET_ENV = {"ITEMS_TOKEN": TOKEN}


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and needle in p.read_bytes():
            hits.append(str(p))
    return hits


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfstream.cli", *args],
        env=subprocess_env(**SECRET_ENV),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(180)
def test_the_token_leaks_nowhere_and_stays_on_its_host(
    tmp_path: Path, fake_server: Callable[..., FakeServer]
) -> None:
    data = Settings(collections=("c0", "handoff"), docs_per=600, bad_per=16, stub_every=5)
    other = fake_server(**data.to_env())
    # the service: checks the token, answers every 7th request with a 429, echoes the
    # Authorization header in its error bodies, sends the handoff collection's next links and
    # redirects to the other host
    api = fake_server(
        **Settings(
            collections=data.collections,
            docs_per=data.docs_per,
            bad_per=data.bad_per,
            stub_every=data.stub_every,
            token=TOKEN,
            echo_auth=True,
            rate_limit_every=7,
            other_url=other.url,
        ).to_env()
    )
    # a service that refuses the token (and echoes it back in the 401 body)
    refuses = fake_server(**Settings(token="another-token", echo_auth=True).to_env())

    options = "token: ${ITEMS_TOKEN}\nmax_tries: 2\nretry_base: 0.01"
    ok_ds, bad_ds = tmp_path / "ok.lance", tmp_path / "denied.lance"
    ok_cfg = items_config(tmp_path / "ok.yaml", ok_ds, api.url, source_options=options)
    denied_cfg = items_config(tmp_path / "denied.yaml", bad_ds, refuses.url, source_options=options)
    outputs: list[str] = []
    runs = [
        (ok_cfg, ("--log-level", "debug", "--json"), 3),  # success with 429s and dead letters
        (ok_cfg, ("--log-level", "debug", "--log-format", "json", "--full"), 3),
        (denied_cfg, ("--log-level", "debug", "--json"), 1),  # auth fails
        (denied_cfg, ("--log-level", "debug"), 1),
    ]
    for cfg, args, code in runs:
        proc = run_sync(cfg, *args, env=SECRET_ENV)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr[-3000:])
        outputs += [proc.stdout, proc.stderr]
    for cmd in (("status", str(ok_cfg), "--json"), ("validate", str(ok_cfg), "--json")):
        proc = _cli(*cmd)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]

    # the runs did what they should: the failure is an auth error, the 429s and dead letters happened
    assert "unauthorized" in outputs[5] and "401" in outputs[5]
    report = json.loads(outputs[0])
    assert report["dead_lettered"] > 0 and report["http"]["rate_limited"] > 0
    assert "DEBUG" in outputs[1]  # debug lines were written
    letters = (ok_ds / "_cfstream" / "dead-letters.jsonl").read_text()
    assert letters.count("\n") >= 2 * 16

    # the token is nowhere: not in any output, nor any file under either dataset
    for text in outputs:
        assert TOKEN not in text
    assert _files_containing(ok_ds, TOKEN.encode()) == []
    assert _files_containing(bad_ds, TOKEN.encode()) == []
    assert check_dataset(ok_ds) is not None

    # the token went to its own host, and never to the other one (next links, redirects): a
    # next link naming the other host is fetched from the own host, with the token
    mine = api.admin("log")["requests"]
    assert mine and all(r["auth"] for r in mine)
    handoff = [r for r in mine if "/collections/handoff/items" in r["path"]]
    assert len(handoff) > 2, "the handoff collection's next pages were not fetched"
    theirs = other.admin("log")["requests"]
    assert not any("/collections/handoff/items" in r["path"] for r in theirs), (
        "a next link was followed to the other host"
    )
    assert any(r["path"].startswith("/v1/items/") for r in theirs), "no redirect followed"
    assert not any(r["auth"] for r in theirs), "the other host received an Authorization header"
    record("r4_requests_to_other_host_without_auth", len(theirs))
    record("r4_token_leaks", 0)


def test_vault_symlinks_outside_the_vault_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nOUTSIDE-THE-VAULT-7731\n")
    vault = tmp_path / "vault"
    (vault / ".obsidian").mkdir(parents=True)
    (vault / "notes").mkdir()
    (vault / "notes" / "a.md").write_text("# A\n\nsee [[b]]\n")
    (vault / "b.md").write_text("# B\n\ninside\n")
    os.symlink(outside / "secret.md", vault / "leak.md")
    os.symlink(outside, vault / "leakdir")
    os.symlink("../../outside/secret.md", vault / "notes" / "relative-leak.md")
    os.symlink(vault / "b.md", vault / "notes" / "alias.md")  # inside: allowed
    dataset = tmp_path / "vault.lance"
    cfg = write_config(
        tmp_path / "vault.yaml",
        f"""
        dataset: {dataset}
        sources:
          notes:
            type: obsidian
            vault_path: {vault}
        """,
    )
    proc = run_sync(cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    table = check_dataset(dataset)
    ids = set(rows_by_source_id(table))
    assert {"notes/a.md", "b.md"} <= ids
    assert not any("leak" in i for i in ids), ids
    texts = " ".join(t or "" for t in table.column("text_content").to_pylist())
    assert "OUTSIDE-THE-VAULT-7731" not in texts
    assert _files_containing(dataset, b"OUTSIDE-THE-VAULT-7731") == []


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!python/object:argparse.Namespace {{x: 1}}",
    ],
)
def test_yaml_tags_that_build_python_objects_are_rejected(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    cfg = write_config(
        tmp_path / "evil.yaml",
        f"dataset: {tmp_path / 'x.lance'}\n"
        f"sources:\n  items:\n    type: relsource:ItemsSource\n    base_url: {tag.format(marker=marker)}\n",
    )
    proc = run_sync(cfg)
    assert proc.returncode == 2, proc.stderr
    assert "YAML tags that build Python objects are not allowed" in proc.stderr, proc.stderr
    assert f"{cfg}:" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "x.lance").exists()


# a child process that unpickles a Secret (in a source's options) and the parent's Redactions,
# then runs a source that logs, dead-letters and fails with both values
_CHILD = textwrap.dedent(
    """
    import logging, pickle, sys

    import cfstream as cf
    from cfstream import transforms as T
    from cfstream.engine.runner import run
    from cfstream.sinks import LanceSink
    from cfstream.sources.base import Source

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    shipped = pickle.loads(sys.stdin.buffer.read())
    token, key = shipped["token"], shipped["key"]


    class Leaky(Source):
        source_type = "leaky"

        def __init__(self, token, fail, **kw):
            super().__init__(**kw)
            self.token, self.fail = token, fail

        async def partitions(self, ctx):
            return ["all"]

        async def read(self, partition, cursor, ctx):
            value = self.token.get_secret_value()
            ctx.logger.debug("calling the service with %s and %s", value, key)
            ctx.logger.warning("the service saw %s", value)
            try:
                raise ValueError(f"the service answered {value}")
            except ValueError:
                ctx.logger.exception("a call failed")
            if self.fail:
                raise RuntimeError(f"the service refused {value} (key {key})")
            yield [
                cf.Document(source_id="ok", title="fine", text_content="fine"),
                cf.Document(source_id="bad", title="", text_content=f"{value} {key}"),
            ]
            ctx.dead_letter(f"item signed with {value}", {"key": key}, source_id="raw")


    pipeline = cf.Pipeline(
        [Leaky(token, False, name="ok"), Leaky(token, True, name="fails")],
        [T.validate()],
        LanceSink(sys.argv[1]),
    )
    report = run(pipeline)
    print(report.to_dict())
    print(report)
    """
)


@pytest.mark.timeout(120)
def test_a_secret_unpickled_in_another_process_is_redacted_there(tmp_path: Path) -> None:
    """A Secret pickled into a child process registers itself there again, and Redactions
    carries a value the parent registered on its own: the child's logs (at DEBUG, and a logged
    traceback), report, source error and dead letters show neither."""
    token = f"tok-CHILD-{uuid.uuid4().hex}"
    key = f"key-PLAIN-{uuid.uuid4().hex}"  # e.g. a service account's private key
    register_secret(key)
    shipped = pickle.dumps({"redactions": Redactions(), "token": Secret(token), "key": key})
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    dataset = tmp_path / "child.lance"
    proc = subprocess.run(
        [sys.executable, str(script), str(dataset)],
        input=shipped,
        env=subprocess_env(),
        capture_output=True,
        timeout=100,
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "the service saw ***" in err and "calling the service with *** and ***" in err
    assert "ValueError: the service answered ***" in err  # a logged traceback
    assert "the service refused *** (key ***)" in out
    letters = read_dead_letters(dataset / "_cfstream" / "dead-letters.jsonl")
    assert sorted(letter["source_id"] for letter in letters) == ["bad", "raw"]
    for needle in (token, key):
        assert needle not in out and needle not in err
        assert _files_containing(tmp_path, needle.encode()) == []
