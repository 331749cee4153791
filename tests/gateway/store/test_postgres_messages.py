"""Review of issue 17: PostgreSQL start-up messages that mislead or leak.

- a ``database_url`` that psycopg cannot parse was echoed in part: an unencoded ``%`` in the
  password gave ``cannot connect (invalid percent-encoded token: "s3c%ret")``, the password;
- a ``search_path`` naming a schema that does not exist made ``current_schema()`` NULL, so the
  log's lock could not be taken and `onecard serve` said "`onecard audit rotate-key` holds this
  log; start the gateway when it is done", sending the operator after a rotation that is not
  running instead of to the schema.
"""

from __future__ import annotations

import secrets

import pytest
from psycopg.conninfo import make_conninfo

from gateway.errors import SetupError
from gateway.store.postgres import PgStore, connect
from tests.postgres import SERVER, require_postgres


def test_an_unreadable_database_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(SetupError) as info:
        connect("postgresql://postgres:s3c%ret@127.0.0.1/test")
    assert "s3c" not in str(info.value), info.value
    assert "database_url" in str(info.value)


def test_a_schema_that_does_not_exist_is_not_reported_as_a_key_rotation() -> None:
    require_postgres()
    missing = f"rv_missing_{secrets.token_hex(4)}"
    with pytest.raises(SetupError) as info:
        PgStore(make_conninfo(SERVER, options=f"-csearch_path={missing}"))
    message = str(info.value)
    assert "rotate-key" not in message, message
    assert "onecard db upgrade" in message, message
