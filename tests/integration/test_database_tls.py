"""The database's certificate is verified: sslmode=verify-full against a
server speaking TLS (the test server behind a proxy that speaks PostgreSQL's
TLS, its certificate signed by a test authority) connects with that
authority and is refused with the RDS authorities the package ships, which
did not sign it."""

import json

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.infra.db import PACKAGE_ROOT, Database
from devstack.postgres import free_port
from tests.support.tls import TlsProxy, make_certificates

SHIPPED = "chalicelib/certs/rds-ca-bundle.pem"


@pytest.fixture
def tls_server(db, tmp_path):
    ca, certificate, key = make_certificates(tmp_path)
    target = conninfo_to_dict(db)
    proxy = TlsProxy(free_port(), int(target.get("port") or 5432), certificate, key, postgres=True)
    yield make_conninfo(db, host="127.0.0.1", port=str(proxy.port), gssencmode="disable"), ca
    proxy.close()


def test_verify_full_connects_when_the_server_is_signed_by_the_authority_given(tls_server):
    url, ca = tls_server
    with Database(make_conninfo(url, sslmode="verify-full", sslrootcert=str(ca))).connect() as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_verify_full_with_the_shipped_rds_authorities_refuses_a_server_they_did_not_sign(tls_server):
    url, _ = tls_server
    assert (PACKAGE_ROOT / SHIPPED).read_text().count("BEGIN CERTIFICATE") >= 90
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        Database(make_conninfo(url, sslmode="verify-full", sslrootcert=SHIPPED)).connect()  # relative: the package's


def test_the_functions_on_aws_verify_the_server_against_the_shipped_authorities():
    prod = json.loads((PACKAGE_ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"]
    options = dict(item.split("=", 1) for item in prod["environment_variables"]["DATABASE_URL"].split())
    assert options == {"sslmode": "verify-full", "sslrootcert": SHIPPED}
    assert (PACKAGE_ROOT / options["sslrootcert"]).is_file()
