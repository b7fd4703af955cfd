"""The `serve` subcommand of `nextbest` (registered through the `nextbest.commands` entry points)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from nextbest.errors import NextbestError

SERVICE = "nextbest_serving.service:NextbestService"
DESCRIPTION = """\
Serve ranked next best actions over HTTP (BentoML): POST /rank, /rank_batch and /score, GET /metadata,
and the probes /livez, /readyz, /healthz and Prometheus /metrics. The model is loaded once at start-up
from --model (default models:/nextbest@champion in MLFLOW_TRACKING_URI's registry); a model that
cannot be loaded stops the command with a message and exit status 1.

Settings come from --config (YAML, e.g. configs/serving/default.yaml), then NEXTBEST_* environment
variables, then these options. With an API key (NEXTBEST_API_KEY, or api_key in the config), every
endpoint but the probes requires `Authorization: Bearer <key>`. Binding to an address other than
loopback without a key is refused unless --insecure-no-api-key says that is intended.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve ranked next best actions over HTTP (BentoML)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="URI", help="MLflow model URI (default models:/nextbest@champion)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="serving settings (YAML)")
    parser.add_argument("--decision-log", type=Path, metavar="DIR", help="append every served decision here")
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
    _check_exposure(args.host, settings.api_key, args.insecure_no_api_key)
    _check_model(settings.model_uri)
    env = {
        **os.environ,
        **settings.to_env(),
        # Without it, a worker whose start-up fails is respawned forever instead of ending the server.
        "BENTOML_CONTAINERIZED": "true",
        "BENTOML_DO_NOT_TRACK": os.environ.get("BENTOML_DO_NOT_TRACK", "true"),
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", SERVICE, "--host", args.host, "--port", str(args.port)]
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        return process.wait()


def _check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    if api_key is not None or insecure or _is_loopback(host):
        return
    raise NextbestError(
        f"--host {host} exposes the service beyond this machine without an API key: set NEXTBEST_API_KEY "
        "(or api_key in --config), or pass --insecure-no-api-key if that is intended"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_model(model_uri: str) -> None:
    """Fails fast, with the reason, when the model cannot be loaded (the server would only log it)."""
    from nextbest.scoring.pyfunc import load_scorer

    load_scorer(model_uri)
