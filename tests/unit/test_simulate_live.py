"""`nextbest simulate live` without a server: the world with a decider in place of the logging policy, the
player against an in-process fake of the service's routes, and the client's errors over real sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest

from nextbest.cli import main
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.errors import NextbestError
from nextbest.simulate import DecisionRound, Served, SimulationConfig, simulate
from nextbest.simulate.client import ServiceClient
from nextbest.simulate.config import LIVE_LEAD_DAYS, live_config
from nextbest.simulate.live import play
from tests.conftest import REPO_ROOT

CATALOG = ActionCatalog.from_yaml(REPO_ROOT / "configs" / "catalogs" / "demo.yaml")
DAY = 86_400


class TestDecider:
    @staticmethod
    def always(action: str, seen: list[DecisionRound] | None = None) -> Any:
        def decider(moment: DecisionRound) -> Served:
            if seen is not None:
                seen.append(moment)
            index = moment.config.action_ids.index(action)
            n = moment.customer.size
            return Served(np.full(n, index, dtype=np.int64), np.full(n, 0.5))

        return decider

    def test_the_world_takes_the_deciders_actions_and_is_equal_for_equal_choices(self) -> None:
        config = SimulationConfig(n_customers=300, seed=4)
        first = simulate(config, self.always("no_action"))
        assert set(first.decisions.column("action").to_pylist()) == {"no_action"}
        assert set(first.decisions.column("propensity").to_pylist()) == {0.5}
        again = simulate(config, self.always("no_action"))
        for name in ("events", "customers", "decisions", "truth"):
            assert getattr(first, name).equals(getattr(again, name))
        other = simulate(config, self.always("call_back"))
        assert not other.events.equals(first.events)  # the served action's touchpoints, and what follows

    def test_a_decider_sees_every_event_before_each_decision(self) -> None:
        seen: list[DecisionRound] = []
        world = simulate(SimulationConfig(n_customers=300, seed=2), self.always("sms_reminder", seen))
        assert [m.customer.size for m in seen] == [300, world.decisions.num_rows - 300]
        events = world.events.to_pandas()
        start = world.config.start.timestamp()
        for moment in seen:
            for customer, as_of in zip(moment.customer[:40], moment.as_of[:40], strict=True):
                cid = moment.customers.column("customer_id")[customer].as_py()
                before = events[(events.customer_id == cid)]
                seconds = before.timestamp.map(lambda t: int(t.timestamp() - start))
                mine = moment.history.customer == customer
                offered = moment.history.time[mine]
                assert sorted(seconds[seconds < as_of]) == sorted(offered[offered < as_of])


class FakeService(ServiceClient):
    """The routes the player calls, answered in process: every decision gets `action` from version "7"."""

    def __init__(self, action: str | None = "push_notification") -> None:
        super().__init__("http://fake")
        self.action = action
        self.calls: list[tuple[str, Any]] = []

    def _call(self, method: str, route: str, data: bytes | None) -> Any:
        body = None if data is None else json.loads(data)
        self.calls.append((route, body))
        if route == "/metadata":
            limits = {"max_events": 500, "max_batch": 50}
            return {"catalog": CATALOG.to_dict(), "limits": limits}
        if route == "/events":
            return {"accepted": len(body["events"]), "duplicates": 0, "rejected": []}
        if route == "/customers":
            return {"upserted": len(body["customers"]), "rejected": []}
        assert route == "/rank_batch"
        results = [
            {
                "customer_id": r["customer_id"],
                "as_of": r["as_of"],
                "model_version": "7",
                "chosen_action": self.action,
                "decision_id": f"d-{r['customer_id']}",
            }
            for r in body["requests"]
        ]
        return {"results": results}


class TestPlayer:
    def test_events_reach_the_service_before_each_decision_in_day_order(self) -> None:
        service = FakeService()
        result = play(service, live_config(150, 10, seed=3), progress=False)
        total = result.total
        assert total.decisions == 150
        assert total.model_versions == {"7": 150}
        assert total.random_value_per_decision <= total.oracle_value_per_decision
        assert total.value_per_decision <= total.oracle_value_per_decision
        assert set(result.per_day) == set(range(1, 11))
        assert sum(day.decisions for day in result.per_day.values()) == 150
        mean = sum(d.value_per_decision * d.decisions for d in result.per_day.values()) / 150
        assert mean == pytest.approx(total.value_per_decision)
        routes = [route for route, _ in service.calls]
        assert routes[:2] == ["/metadata", "/customers"]
        posted: dict[str, list[str]] = {}
        everything: list[str] = []
        for route, body in service.calls:
            if route == "/events":
                for event in body["events"]:
                    posted.setdefault(event["customer_id"], []).append(event["timestamp"])
                    everything.append(json.dumps(event, sort_keys=True))
            if route == "/rank_batch":
                for request in body["requests"]:  # the history up to the decision is in
                    assert posted[request["customer_id"]][-1] < request["as_of"]
        assert len(everything) == result.events_posted
        assert len(set(everything)) == len(everything)  # each event once
        for times in posted.values():  # each customer's events in time order
            assert times == sorted(times)

    def test_the_touchpoint_of_a_served_action_names_its_decision(self) -> None:
        service = FakeService("sms_reminder")
        play(service, live_config(40, 5, seed=1), progress=False)
        touches = [
            e
            for route, body in service.calls
            if route == "/events"
            for e in body["events"]
            if "decision_id" in e
        ]
        assert len(touches) == 40
        assert {e["event_type"] for e in touches} == {"sms_sent"}
        assert all(e["decision_id"] == f"d-{e['customer_id']}" for e in touches)

    def test_no_action_served_is_the_no_action_baseline(self) -> None:
        held_back = play(FakeService(None), live_config(60, 5, seed=2), progress=False)
        baseline = play(FakeService("no_action"), live_config(60, 5, seed=2), progress=False)
        assert held_back == baseline

    def test_the_live_period_spans_the_days(self) -> None:
        config = live_config(10, 20, seed=0)
        assert config.decision_window == (LIVE_LEAD_DAYS, LIVE_LEAD_DAYS + 20)
        assert config.second_decision_rate == 0.0

    def test_a_later_world_with_its_own_prefix_shares_no_customer_and_starts_on_its_first_day(self) -> None:
        """The second period of a loop: new customers, decided from its first day on, served as truly as
        the first's (the served actions' true rates are those of the truth table)."""
        first, later = FakeService(), FakeService()
        play(first, live_config(30, 5, seed=1), progress=False)
        result = play(
            later, live_config(30, 5, seed=1, first_day=date(2026, 6, 1), customer_prefix="p"), progress=False
        )
        earlier = [r for route, body in first.calls if route == "/rank_batch" for r in body["requests"]]
        decided = [r for route, body in later.calls if route == "/rank_batch" for r in body["requests"]]
        assert all(r["customer_id"].startswith("c") for r in earlier)
        assert all(r["customer_id"].startswith("p") for r in decided)
        assert min(r["as_of"] for r in decided) >= "2026-06-01"
        assert max(r["as_of"] for r in decided) < "2026-06-06"
        truth = result.total.served_truth
        assert sum(t["decisions"] for t in truth.values()) == 30
        assert all(0 <= t["p_conversion"] <= 1 and 0 <= t["p_churn"] <= 1 for t in truth.values())


@dataclass
class Stub:
    url: str
    authorizations: list[str | None]


@pytest.fixture
def answering_404() -> Iterator[Stub]:
    """A server that answers every GET 404, keeping each request's Authorization header."""
    authorizations: list[str | None] = []

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorizations.append(self.headers.get("Authorization"))
            body = json.dumps({"error": "no such route"}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stub(f"http://127.0.0.1:{server.server_port}", authorizations)
    finally:
        server.shutdown()
        server.server_close()


class TestErrors:
    def test_an_unreachable_service_is_one_clear_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["simulate", "live", "--url", "http://127.0.0.1:9", "--customers", "5"]) == 1
        err = capsys.readouterr().err
        assert "cannot reach the service at http://127.0.0.1:9 (GET /metadata)" in err
        assert "Traceback" not in err

    def test_an_answer_that_is_not_2xx_names_route_and_status(
        self, answering_404: Stub, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = answering_404.url
        assert main(["simulate", "live", "--url", url]) == 1
        assert f"GET /metadata at {url} answered 404: no such route" in capsys.readouterr().err

    def test_the_api_key_is_sent_as_a_bearer_token(
        self, answering_404: Stub, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NEXTBEST_API_KEY", "a-key-of-sixteen-chars")
        assert main(["simulate", "live", "--url", answering_404.url]) == 1
        assert answering_404.authorizations == ["Bearer a-key-of-sixteen-chars"]

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--url", "127.0.0.1:3000"], "--url must be an http:// or https:// address"),
            (["--url", "http://x", "--days", "0"], "--days must be at least 1"),
            (["--url", "http://x", "--customers", "0"], "--customers must be at least 1"),
        ],
    )
    def test_bad_arguments_are_reported(
        self, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["simulate", "live", *extra]) == 1
        assert message in capsys.readouterr().err

    def test_a_catalog_of_other_actions_is_refused(self) -> None:
        service = FakeService()
        other = {**CATALOG.to_dict(), "actions": CATALOG.to_dict()["actions"][:2]}
        service._call = lambda method, route, data: {"catalog": other, "limits": {}}  # type: ignore[method-assign]
        with pytest.raises(NextbestError, match="the service's catalog has actions"):
            play(service, live_config(5, 2, seed=0), progress=False)

    def test_an_answer_without_what_a_service_says_is_named(self) -> None:
        service = FakeService()
        service._call = lambda method, route, data: {"status": "ok"}  # type: ignore[method-assign]
        with pytest.raises(NextbestError, match="GET /metadata: the answer has no 'catalog'"):
            play(service, live_config(5, 2, seed=0), progress=False)

    def test_simulate_without_out_says_what_is_missing(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["simulate", "--customers", "5"]) == 1
        assert "--out is required" in capsys.readouterr().err


def test_the_help_names_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "live", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--url", "--customers", "--days", "--seed", "--json"))
