"""Hydra's schemas for conf/train.yaml and conf/build.yaml, registered for every test, the tiny
digits cache every package's tests share (built once a session), and the servers the remote-set
tests read from (testkit/servers.py).

The apps register the schemas when they import their config modules; a test that composes a
config directly must not depend on another test having imported them first.
"""

import pytest

import data.config
import distill.config

data.config.register_build_configs()
distill.config.register_configs()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> list[str]:
    """Every digits set (offline, online raw, validation) built by the project's builder from
    about 64 real images each, labelled by a random-init 32-px ``timm:resnet10t`` saved where the
    digits teacher is cached (so nothing is trained); returns the overrides to use. Built once
    for the whole session: a test that changes its files copies the cache first."""
    from tests.distill.conftest import ON_CACHE, TINY_DATA, build_cache

    cache = tmp_path_factory.mktemp("tiny_cache")
    overrides = [f"paths.cache={cache}", *TINY_DATA, *ON_CACHE]
    build_cache(cache, overrides, baseline=False, teacher=True)
    return overrides


@pytest.fixture
def fast_transport():
    """Remote reads that give up within about a second (the fault tests), reset afterwards."""
    from data import remote

    t = remote.Transport(
        retry_s=1.0, retries=3, connect_timeout_s=0.5, read_timeout_s=0.5, give_up_s=2.5
    )
    remote.configure(t)
    yield t
    remote.configure(None)


@pytest.fixture
def http_server(tmp_path):
    """A range-capable HTTP server over ``tmp_path / "www"`` (testkit/servers.py)."""
    from testkit.servers import RangeServer

    (tmp_path / "www").mkdir()
    server = RangeServer(tmp_path / "www")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    from testkit.servers import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server, monkeypatch, request) -> str:
    """A fresh bucket on the moto server, its credentials in this process's environment;
    returns ``s3://<bucket>``."""
    from data import remote

    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[-50:]
    moto_server.make_bucket(name)
    remote.configure(remote.settings())  # stores made before these variables are dropped
    return f"s3://{name}"
