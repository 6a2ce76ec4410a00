"""Cloud link security: TLS, mutual TLS, login; failures surface as a clear ``last_error``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.sim.cloud_client import CloudClient
from tests.support.broker import Broker, TlsFiles, make_tls_files
from tests.support.cloud import GW, SITE, make_config, running_link, until


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


async def test_tls_with_ca(tmp_path: Path, certs: TlsFiles):
    with Broker(tmp_path / "b", tls=certs) as broker:
        with CloudClient("127.0.0.1", broker.port, SITE, GW, ca=certs.ca) as cloud:
            cfg = make_config(tmp_path / "gw", broker.port, {}, tls={"ca": str(certs.ca)})
            async with running_link(cfg):
                assert await until(lambda: bool(cloud.on("sync/request")))
                assert cloud.on("status")[-1].json()["online"] is True


async def test_mutual_tls(tmp_path: Path, certs: TlsFiles):
    with Broker(tmp_path / "b", tls=certs, require_client_cert=True) as broker:
        cloud = CloudClient(
            "127.0.0.1", broker.port, SITE, GW, ca=certs.ca, cert=certs.client_cert, key=certs.client_key
        )
        with cloud:
            tls = {"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}
            cfg = make_config(tmp_path / "gw", broker.port, {}, tls=tls)
            async with running_link(cfg):
                assert await until(lambda: bool(cloud.on("sync/request")))


async def test_wrong_ca_is_reported(tmp_path: Path, certs: TlsFiles):
    with Broker(tmp_path / "b", tls=certs) as broker:
        cfg = make_config(tmp_path / "gw", broker.port, {}, tls={"ca": str(certs.other_ca)})
        async with running_link(cfg, wait_connected=False) as h:
            assert await until(lambda: h.link.last_error is not None, 15)
            assert "TLS certificate problem" in str(h.link.last_error)
            assert "check mqtt.tls.ca" in str(h.link.last_error)
            assert not h.link.connected


async def test_missing_client_certificate_is_reported(tmp_path: Path, certs: TlsFiles):
    with Broker(tmp_path / "b", tls=certs, require_client_cert=True) as broker:
        cfg = make_config(tmp_path / "gw", broker.port, {}, tls={"ca": str(certs.ca)})
        async with running_link(cfg, wait_connected=False) as h:
            assert await until(lambda: h.link.last_error is not None, 15)
            err = str(h.link.last_error)
            assert "client certificate" in err and "mqtt.tls.cert" in err, err
            assert not h.link.connected


async def test_bad_password_is_reported_with_reason_code(tmp_path: Path):
    with Broker(tmp_path / "b", passwords={"gw": "right", "cloud": "c"}) as broker:
        cfg = make_config(tmp_path / "gw", broker.port, {}, username="gw", password="wrong")
        async with running_link(cfg, wait_connected=False) as h:
            assert await until(lambda: h.link.last_error is not None, 15)
            err = str(h.link.last_error)
            assert "broker refused the connection" in err and (
                "reason code 134" in err or "reason code 135" in err
            ), err
            assert "mqtt.username" in err
            assert not h.link.connected
        cfg = make_config(tmp_path / "gw", broker.port, {}, username="gw", password="right")
        with CloudClient("127.0.0.1", broker.port, SITE, GW, username="cloud", password="c") as cloud:
            async with running_link(cfg):
                assert await until(lambda: bool(cloud.on("sync/request")))


async def test_missing_ca_file_is_reported(tmp_path: Path, certs: TlsFiles):
    with Broker(tmp_path / "b", tls=certs) as broker:
        cfg = make_config(tmp_path / "gw", broker.port, {}, tls={"ca": str(tmp_path / "nope.pem")})
        async with running_link(cfg, wait_connected=False) as h:
            assert await until(lambda: h.link.last_error is not None, 15)
            assert "mqtt.tls.ca" in str(h.link.last_error) and "nope.pem" in str(h.link.last_error)
