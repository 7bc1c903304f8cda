"""Helpers of the ContextFrame-guide tests (a module name no other test folder uses)."""

from __future__ import annotations

from dataclasses import dataclass

import lance

from cfstream.testing import FakeAPI
from cfstream.testing.fakes.github import FakeGitHub
from cfstream.testing.fakes.linear import FakeLinear
from cfstream.testing.fakes.notion import FakeNotion
from cfstream.testing.fakes.slack import FakeSlack


@dataclass
class Services:
    """The fakes, served on one FakeAPI whose roots are in the environment."""

    api: FakeAPI
    github: FakeGitHub
    linear: FakeLinear
    notion: FakeNotion
    slack: FakeSlack
    dataset: str


def assert_no_duplicates(dataset: str) -> int:
    """Every row has its own uuid; returns the row count."""
    table = lance.dataset(dataset).to_table(columns=["uuid"])
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids)), "a record was duplicated"
    return len(uuids)
