"""Fixtures of the store tests: every test that takes `store` runs once per backend, against a real
SQLite file, a real `redis-server` (Debian's `redis-server`; `.ci/run` installs it) started on a free
loopback port for the session, and (marked slow) a real 3-node Redis Cluster of such servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.store import CustomerStore, open_store

BACKENDS = ("sqlite", "redis", pytest.param("redis_cluster", marks=pytest.mark.slow))
CLUSTER_NODES = 3
# A cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000
CREATE_OPTIONS = ("--cluster-replicas", "0", "--cluster-yes")  # primaries only, no prompt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET < 2**16:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
                except OSError:
                    continue
            return port


def installed(program: str) -> str:
    executable = shutil.which(program)
    if executable is None:
        pytest.skip(f"{program} is not installed (apt-get install redis-server; .ci/run does)")
    return executable


class RedisServer:
    """A `redis-server` of this test session: in a temporary folder, persisting nothing (with
    `cluster`, a node of a Redis Cluster)."""

    def __init__(self, folder: Path, cluster: bool = False) -> None:
        self.port = free_cluster_port() if cluster else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [
            *(installed("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(folder), "--save", "", "--appendonly", "no"),
        ]
        if cluster:
            self.command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class LocalCluster:
    """A Redis Cluster of `CLUSTER_NODES` primaries (no replicas) on loopback, each node in a folder of
    its own."""

    def __init__(self, folder: Path) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for i in range(CLUSTER_NODES):
                (folder / str(i)).mkdir()
                self.nodes.append(RedisServer(folder / str(i), cluster=True))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [installed("redis-cli"), "--cluster", "create", *addresses, *CREATE_OPTIONS],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def _wait_until_ok(self) -> None:
        """Until every node says the cluster is ok (all slots served, the nodes agreeing)."""
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port, decode_responses=True) as client:
                    states.append(client.cluster("INFO")["cluster_state"])
            if states == ["ok"] * len(self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster did not come up: {states}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store's URI, of the backend the test is parametrised with."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    import redis
    from redis.cluster import RedisCluster

    if request.param == "redis_cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        with RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as nodes:
            nodes.flushall()  # on every primary
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_uri" in metafunc.fixturenames:
        metafunc.parametrize("store_uri", BACKENDS, indirect=True)


@pytest.fixture
def store(store_uri: str) -> Iterator[CustomerStore]:
    with open_store(store_uri) as opened:
        yield opened
