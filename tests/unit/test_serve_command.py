"""`nextbest serve` checks where it will listen before it loads anything: a host name is resolved to the
address BentoML binds, and an address it cannot listen on is a message, not a failure after start-up."""

from __future__ import annotations

import socket

import pytest

from nextbest.cli import main
from nextbest_serving.commands import _listening_address


def test_localhost_is_resolved_to_a_loopback_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _listening_address("localhost", port) == "127.0.0.1"


def test_a_busy_port_is_refused_before_the_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--host", "localhost", "--port", str(port), "--model", "/nowhere"]) == 1
    assert f"--host localhost --port {port}: cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_a_host_that_does_not_resolve_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "no-such-host.invalid", "--model", "/nowhere"]) == 1
    assert "--host no-such-host.invalid: not an address this machine can resolve" in capsys.readouterr().err


def test_a_port_out_of_range_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "70000"])
    assert exit_.value.code == 2
