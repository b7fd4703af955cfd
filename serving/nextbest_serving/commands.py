"""The `serve` subcommand of `nextbest` (registered through the `nextbest.commands` entry points)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psutil

from nextbest.errors import NextbestError
from nextbest.registry import DEFAULT_MODEL_URI

if TYPE_CHECKING:
    from nextbest_serving.settings import ServingSettings

SERVICE = "nextbest_serving.service:NextbestService"
# What an operator stops a service with: systemd, Kubernetes and Docker send SIGTERM, a terminal SIGINT,
# a closed session SIGHUP.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Docker's default wait between its SIGTERM and SIGKILL: past it, the server and its workers are killed.
SHUTDOWN_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DESCRIPTION = f"""\
Serve ranked next best actions over HTTP (BentoML): POST /rank, /rank_batch and /score, GET /metadata,
and the probes /livez, /readyz, /healthz and Prometheus /metrics. The model is loaded once at start-up
from --model (default {DEFAULT_MODEL_URI} in MLFLOW_TRACKING_URI's registry); a model that
cannot be loaded stops the command with a message and exit status 1. With --reload-seconds S, every
worker checks the model's alias every S seconds and swaps in the version it moved to (after `nextbest
promote`) without a restart and without failing a request; each answer names the version that made it.

With --store URI (sqlite:///PATH, or redis://HOST:PORT/DB shared by several machines) the service keeps
each customer's events, profile and served contacts: POST /events and /customers feed it, GET and DELETE
/customers/{{id}} read and erase a customer, and /rank, /rank_batch and /score may name a customer alone.
Each served action is recorded in the same atomic step as its contact-limit check, so limits hold across
--workers N worker processes and machines. A store that cannot be opened stops the command (exit 1).

Settings come from --config (YAML, see configs/serving/default.yaml), then NEXTBEST_* environment
variables, then these options. With an API key (NEXTBEST_API_KEY, or api_key in the config), every
endpoint but the probes requires `Authorization: Bearer <key>`. Binding to an address other than
loopback without a key is refused unless --insecure-no-api-key says that is intended.

SIGTERM, SIGINT or SIGHUP stops the server and its workers (killed if still running after
{SHUTDOWN_GRACE_S:g} s); so does this command's end, however it ends.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve ranked next best actions over HTTP (BentoML)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="URI", help=f"MLflow model URI (default {DEFAULT_MODEL_URI})")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address or host name to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=_port, default=3000, help="port (default 3000)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="serving settings (YAML)")
    parser.add_argument("--decision-log", type=Path, metavar="DIR", help="append every served decision here")
    parser.add_argument(
        "--reload-seconds",
        type=float,
        metavar="S",
        help="check the model's alias every S seconds and serve the version it moves to, without a restart",
    )
    parser.add_argument(
        "--store", metavar="URI", help="keep customer state here: sqlite:///PATH or redis://HOST:PORT/DB"
    )
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1)")
    parser.add_argument(
        "--insecure-no-api-key",
        action="store_true",
        help="allow binding a non-loopback address without an API key",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nextbest_serving.settings import ServingSettings

    from_file = ServingSettings.from_yaml(args.config) if args.config else None
    settings = ServingSettings.from_env(base=from_file)
    if args.model:
        settings = replace(settings, model_uri=args.model)
    if args.decision_log:
        settings = replace(settings, decision_log=args.decision_log)
    if args.reload_seconds is not None:
        settings = replace(settings, reload_seconds=args.reload_seconds)
    if args.store:
        settings = replace(settings, store=args.store)
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    address = _listening_address(args.host, args.port)
    _check_exposure(args.host, address, settings.api_key, args.insecure_no_api_key)
    _check_model_and_store(settings)
    env = {
        **os.environ,
        **settings.to_env(),
        # Without it, a worker whose start-up fails is respawned forever instead of ending the server.
        "BENTOML_CONTAINERIZED": "true",
        "BENTOML_DO_NOT_TRACK": os.environ.get("BENTOML_DO_NOT_TRACK", "true"),
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", SERVICE, "--host", address, "--port", str(args.port)]
    return _Server(command, env).wait()


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def _listening_address(host: str, port: int) -> str:
    """The IP address that `host` names, checked to be free to listen on at `port`.

    BentoML binds IP addresses only (`localhost` fails in it, after the model has loaded), and a busy
    port fails there too: both are found here, before anything loads.
    """
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NextbestError(
            f"--host {host}: not an address this machine can resolve ({exc.strerror})"
        ) from None
    # IPv4 first: `localhost` may resolve to ::1 first, and 127.0.0.1 is what clients and docs expect.
    family, *_, sockaddr = min(found, key=lambda entry: entry[0] != socket.AF_INET)
    address = str(sockaddr[0])
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise NextbestError(
                f"--host {host} --port {port}: cannot listen on {address} ({exc.strerror})"
            ) from None
    return address


def _check_exposure(host: str, address: str, api_key: str | None, insecure: bool) -> None:
    if api_key is not None or insecure or ipaddress.ip_address(address).is_loopback:
        return
    raise NextbestError(
        f"--host {host} exposes the service beyond this machine without an API key: set NEXTBEST_API_KEY "
        "(or api_key in --config), or pass --insecure-no-api-key if that is intended"
    )


def _check_model_and_store(settings: ServingSettings) -> None:
    """Fails fast, with the reason, when the model cannot be loaded or the store opened (the server
    would only log it), or when the store would keep fewer events than the model reads."""
    from nextbest.scoring.pyfunc import load_scorer
    from nextbest.store import open_store

    scorer = load_scorer(settings.model_uri)
    if settings.store is None:
        return
    window = scorer.encoder.config.max_events
    if settings.store_max_events < window:
        raise NextbestError(
            f"store_max_events: {settings.store_max_events:,} events per customer is fewer than the "
            f"{window:,} the model reads; keep at least that many"
        )
    with open_store(settings.store, max_events=settings.store_max_events, ttl_days=settings.store_ttl_days):
        pass


class _Server:
    """The BentoML server, supervised: the signals that stop a service stop it, it is killed with its
    workers if still running `SHUTDOWN_GRACE_S` after the first, and it stops if this process dies, even
    by SIGKILL (Linux).

    Circus, BentoML's process manager, starts each worker in a session of its own, out of reach of a
    signal to the server's process group: the kill walks the process tree instead.
    """

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        # A process group of its own: a terminal's Ctrl-C reaches this process alone, which passes it on.
        self.process = subprocess.Popen(command, env=env, process_group=0, preexec_fn=_stop_with_parent())
        self.tree = psutil.Process(self.process.pid)  # remembers its start time: never a reused pid
        self._escalation: threading.Timer | None = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._stop)

    def wait(self) -> int:
        """Waits for the server to end; returns its exit status (128 + N when signal N ended it)."""
        status = self.process.wait()  # resumed after each signal's handler
        if self._escalation is not None:
            self._escalation.cancel()
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        return 128 - status if status < 0 else status

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # SIGTERM whatever the signal: circus reloads the workers on SIGHUP instead of stopping.
        self.process.send_signal(signal.SIGTERM)
        if self._escalation is None:
            self._escalation = threading.Timer(SHUTDOWN_GRACE_S, self._kill)
            self._escalation.daemon = True
            self._escalation.start()

    def _kill(self) -> None:
        try:
            processes = [*self.tree.children(recursive=True), self.tree]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def _stop_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send the server SIGTERM when this process dies, however it dies
    (prctl PR_SET_PDEATHSIG; the setting survives the exec). Elsewhere, None."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:  # this process died before the call: no signal will come
            os._exit(1)

    return set_parent_death_signal
