"""The online service: ranked next best actions over HTTP (DESIGN §4), a BentoML 1.4 class service.

    POST /rank        one request (ScoringRequest) → its ranked actions (RankResponse)
    POST /rank_batch  {"requests": [...]} (RankBatchRequest) → {"results": [...]}, many customers per call
    POST /score       one request → the model's probabilities, unranked (ScoreResponse)
    GET  /metadata    model name, version, run id, catalog and limits (MetadataResponse)
    POST /events      customers' events into the store (EventsRequest → EventsResponse)
    POST /customers   profile attributes into the store (CustomersRequest → CustomersResponse)
    GET, DELETE /customers/{customer_id}   what the store holds about a customer; its erasure
    GET  /docs.json   the OpenAPI document (`nextbest_serving.openapi`)
    GET  /livez /readyz /healthz /metrics   BentoML's probes and Prometheus metrics

Every refusal is a 4xx with an `ErrorResponse` body that names the field.

Start it with `nextbest serve` (settings: `nextbest_serving.settings`). The model is loaded per worker at
start-up, only from the configured URI, and again when its alias moves if `reload_seconds` is set
(`ModelFollower`). Requests go through the same `score_records` as the
pyfunc model and the batch job, batched across concurrent callers (`MicroBatcher`); a request whose
deadline passes gets the catalog's default order, flagged as a fallback.

With a customer store (`store` setting, DESIGN §4a) a request may name its customer alone: its stored
history and profile are merged in, and the served action is recorded as a contact in the store's atomic
step (`nextbest.scoring.stored`). A store that cannot be reached answers 503, naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import bentoml
import torch
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nextbest import __version__
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.errors import DataContractError, NextbestError
from nextbest.registry import RegisteredModelUri, resolved_version
from nextbest.scoring.decision_log import DecisionLogWriter
from nextbest.scoring.memory import keep_freed_memory
from nextbest.scoring.pyfunc import load_version
from nextbest.scoring.records import fallback_answer, probability_records, score_records
from nextbest.scoring.schemas import RankResponse, ScoreResponse, ServedScoringRequest
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.stored import StoredRequests, new_decision_id, served
from nextbest.store import AppendResult, CustomerStore, StoreError, UpsertResult, open_store
from nextbest_serving import metrics, openapi, refusals
from nextbest_serving.batching import MicroBatcher
from nextbest_serving.guards import ApiKeyGuard, BodySizeGuard, LineBreakPathGuard
from nextbest_serving.schemas import (
    CustomerAnswer,
    CustomersRequest,
    CustomersResponse,
    ErasedResponse,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    Limits,
    MetadataResponse,
    RankBatchRequest,
    RankBatchResponse,
)
from nextbest_serving.settings import ServingSettings

logger = logging.getLogger("nextbest_serving")

# Adaptive batching of the model calls: a batch closes at this size, or this long after its first request
# (when requests overlap; a lone client does not wait). The window buys batch size under load; the size
# bounds how long the event loop is busy with one batch, and larger batches outgrow the CPU caches (both
# measured: docs/benchmarks.md, "Measurements behind the serving defaults"). Requests
# queue in arrival order whatever the size, so a /rank behind a /rank_batch call waits for the call's
# requests either way; a smaller size only answers probes and notices deadlines sooner.
MAX_BATCH_SIZE = 256
MAX_LATENCY_MS = 2.0
# From this many requests a model batch uses the `torch_threads` setting's intra-op threads (see
# `_threads_for`); concurrent /rank callers make batches of a few.
LARGE_BATCH = 32
CUSTOMER_ROUTE = "/customers/{customer_id}"


_settings = ServingSettings.from_env()


@bentoml.service(
    name="nextbest",
    workers=_settings.workers,
    traffic={"timeout": 60},
    # One line per request would drown the model's own log lines; Prometheus counts the requests.
    logging={"access": {"enabled": False}},
)
class NextbestService:
    """Loads the configured model and answers ranking and scoring requests."""

    def __init__(self) -> None:
        logger.setLevel(logging.INFO)  # BentoML leaves the root logger at WARNING
        refusals.install()  # refused requests: one line without their values, and a metric
        self.settings = ServingSettings.from_env()
        torch.set_num_threads(1)
        self.model = ServedModel.load(self.settings.model_uri)
        self.store = _open_store(self.settings)
        self.batch_sizes = metrics.batch_sizes()
        metrics.record_version(self.model.version)
        self.ranker = MicroBatcher(self._rank, MAX_BATCH_SIZE, MAX_LATENCY_MS)
        self.prober = MicroBatcher(self._probabilities, MAX_BATCH_SIZE, MAX_LATENCY_MS)
        self.decision_log = (
            None
            if self.settings.decision_log is None
            else DecisionLogWriter(self.settings.decision_log, self.settings.decision_log_rows)
        )
        _tune_garbage_collector()
        keep_freed_memory()  # large batches reuse memory instead of page-faulting it in again
        logger.info("serving %s (version %s)", self.settings.model_uri, self.model.version)
        self.follower = None
        if self.settings.reload_seconds is not None:
            self.follower = ModelFollower(self, self.settings.reload_seconds)
            self.follower.start()

    def __is_ready__(self) -> bool:
        return self.model is not None

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        await self.ranker.close()
        await self.prober.close()
        if self.decision_log is not None:
            self.decision_log.close()
        if self.store is not None:
            self.store.close()

    @bentoml.api(route="/rank")
    async def rank(self, request: ServedScoringRequest, /) -> RankResponse:
        """Ranks the next best actions for one customer's context."""
        refusal = self._refusal([request])
        if refusal is not None:
            return refusal  # type: ignore[return-value]
        try:
            async with asyncio.timeout(self.settings.deadline_ms / 1000.0):
                (answer,) = await self.ranker.submit([request])
        except TimeoutError:
            try:
                answer = self._fallback(request)
            except StoreError as exc:
                return _unavailable(exc)  # type: ignore[return-value]
        except DataContractError as exc:
            return _error(422, str(exc))  # type: ignore[return-value]
        except StoreError as exc:
            return _unavailable(exc)  # type: ignore[return-value]
        self._record_served([request], [answer])
        return answer

    @bentoml.api(route="/rank_batch")
    async def rank_batch(self, batch: RankBatchRequest, /) -> RankBatchResponse:
        """Ranks the next best actions for many customers in one call."""
        requests = batch.requests
        if len(requests) > self.settings.max_batch:
            return _error(  # type: ignore[return-value]
                413,
                f"requests: {len(requests):,} in one call, more than the limit of "
                f"{self.settings.max_batch:,}",
            )
        refusal = self._refusal(requests)
        if refusal is not None:
            return refusal  # type: ignore[return-value]
        answers = await self.ranker.outcomes(requests)
        for i, answer in enumerate(answers):
            if isinstance(answer, DataContractError):
                return _error(422, f"requests[{i}]: {answer}")  # type: ignore[return-value]
            if isinstance(answer, StoreError):
                return _unavailable(answer)  # type: ignore[return-value]
        ranked = cast(list[RankResponse], answers)
        self._record_served(requests, ranked)
        return RankBatchResponse(results=ranked)

    @bentoml.api(route="/score")
    async def score(self, request: ServedScoringRequest, /) -> ScoreResponse:
        """The model's probabilities for one customer's context, with no ranking."""
        refusal = self._refusal([request])
        if refusal is not None:
            return refusal  # type: ignore[return-value]
        try:
            (answer,) = await self.prober.submit([request])
        except DataContractError as exc:
            return _error(422, str(exc))  # type: ignore[return-value]
        except StoreError as exc:
            return _unavailable(exc)  # type: ignore[return-value]
        return answer

    @bentoml.api(route="/events")
    async def events(self, batch: EventsRequest, /) -> EventsResponse:
        """Stores customers' events: each checked against the data contract, the bad ones named by index
        and field while the good ones are stored; an event stored before is a duplicate, stored once."""
        if self.store is None:
            return _no_store()  # type: ignore[return-value]
        return await _stored(
            "events", batch.events, self.settings.max_events, self.store.append_events, EventsResponse
        )

    @bentoml.api(route="/customers")
    async def customers(self, batch: CustomersRequest, /) -> CustomersResponse:
        """Sets customers' profile attributes (null removes one); bad rows are named by index and field."""
        if self.store is None:
            return _no_store()  # type: ignore[return-value]
        write = self.store.upsert_profiles
        return await _stored("customers", batch.customers, self.settings.max_batch, write, CustomersResponse)

    def metadata(self) -> MetadataResponse:
        """What `GET /metadata` answers."""
        registered = RegisteredModelUri.parse(self.settings.model_uri)
        settings, model = self.settings, self.model
        return MetadataResponse(
            model_name=registered.name if registered else None,
            model_uri=settings.model_uri,
            model_version=model.version,
            run_id=model.scorer.metadata.get("run_id"),
            actions=list(model.scorer.actions),
            catalog=model.catalog.to_dict(),
            limits=Limits(
                max_events=settings.max_events,
                max_batch=settings.max_batch,
                max_body_bytes=settings.max_body_bytes,
                deadline_ms=settings.deadline_ms,
            ),
            nextbest_version=__version__,
        )

    def _fallback(self, request: ServedScoringRequest) -> RankResponse:
        """The catalog's default order for a request past its deadline; with a store, what it serves is
        checked against the stored contacts and recorded, as the model's answers are."""
        model = self.model
        deadline = f"deadline of {self.settings.deadline_ms:g} ms passed"
        answer = fallback_answer(request, model.catalog, model.version, deadline)
        if self.store is None:
            answer.decision_id = new_decision_id()
            return answer
        return served(self.store, [answer], model.catalog)[0]

    def _rank(self, records: list[ServedScoringRequest]) -> list[RankResponse | Exception]:
        self.batch_sizes.labels("rank").observe(len(records))
        model = self.model  # one model for the whole batch, whatever a reload swaps in meanwhile
        store = self.store

        def rank(batch: list[ServedScoringRequest]) -> list[RankResponse]:
            if store is None:
                answers = score_records(model.scorer, batch, model.version)
                for answer in answers:
                    answer.decision_id = new_decision_id()
                return answers
            stored = StoredRequests.read(store, batch, model.catalog)
            answers = score_records(model.scorer, stored.records, model.version, held_back=stored.held_back)
            return served(store, answers, model.catalog)

        with self._threads_for(records):
            return _each_or_alone(rank, records)

    def _probabilities(self, records: list[ServedScoringRequest]) -> list[ScoreResponse | Exception]:
        self.batch_sizes.labels("score").observe(len(records))
        model = self.model
        store = self.store

        def probabilities(batch: list[ServedScoringRequest]) -> list[ScoreResponse]:
            if store is not None:
                batch = StoredRequests.read(store, batch, model.catalog).records
            return probability_records(model.scorer, batch, model.version)

        with self._threads_for(records):
            return _each_or_alone(probabilities, records)

    @contextlib.contextmanager
    def _threads_for(self, records: list[ServedScoringRequest]) -> Iterator[None]:
        """Torch's intra-op threads for scoring `records`: `torch_threads` for a large batch, else one.

        Spreading a small batch costs more than it saves, and the spare cores are busy with the requests
        being received; a /rank_batch call's large batches gain from the threads (docs/benchmarks.md,
        "Measurements behind the serving defaults").
        """
        torch.set_num_threads(self.settings.torch_threads if len(records) >= LARGE_BATCH else 1)
        try:
            yield
        finally:
            torch.set_num_threads(1)

    def _refusal(self, requests: list[ServedScoringRequest]) -> JSONResponse | None:
        for i, request in enumerate(requests):
            if request.events is None:
                if self.store is None:
                    where = "events" if len(requests) == 1 else f"requests[{i}].events"
                    return _error(422, f"{where}: required: this service keeps no customer store")
            elif len(request.events) > self.settings.max_events:
                return _error(
                    413,
                    f"events: {len(request.events):,} events for customer {request.customer_id!r}, more than "
                    f"the limit of {self.settings.max_events:,}",
                )
        return None

    def _record_served(self, requests: list[ServedScoringRequest], answers: list[RankResponse]) -> None:
        metrics.record_answers(answers)
        if self.decision_log is not None:
            self.decision_log.append(requests, answers)


@dataclass(frozen=True)
class ServedModel:
    """What answers requests: the scorer, its catalog and the version named in every answer. Swapped as
    one object, so a batch never pairs one version's scores with another's number."""

    scorer: JourneyScorer
    catalog: ActionCatalog
    version: str

    @classmethod
    def load(cls, model_uri: str) -> ServedModel:
        scorer, version = load_version(model_uri)
        return cls(scorer, scorer.action_catalog, version)


class ModelFollower:
    """Checks the service's model alias every `seconds` on a thread of its own and, when the alias has
    moved, loads the version it names and swaps it in. Requests keep being answered meanwhile, by the old
    model until the swap and the new one after it; a version that cannot be loaded is logged and tried
    again at the next check, while the old one goes on serving."""

    def __init__(self, service: NextbestService, seconds: float) -> None:
        self.service = service
        self.seconds = seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="nextbest-model-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _follow(self) -> None:
        while not self._stopped.wait(self.seconds):
            self.check()

    def check(self) -> None:
        """Swaps in the version the alias names now, if it is not the one served."""
        uri, served = self.service.settings.model_uri, self.service.model.version
        try:
            if resolved_version(uri) == served:
                return
            model = ServedModel.load(uri)
        except NextbestError as exc:
            logger.warning("model reload: keeping version %s: %s", served, exc)
            return
        except Exception as exc:  # e.g. a locked or unreachable store: the thread must outlive it
            logger.warning("model reload: keeping version %s: %s: %s", served, type(exc).__name__, exc)
            return
        self.service.model = model
        metrics.record_version(model.version, previous=served)
        # Start-up froze the first model out of the collector's reach (`_tune_garbage_collector`): let the
        # collector free the old one, then freeze the new one as start-up did.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        logger.info("serving %s (version %s, was %s)", uri, model.version, served)


def _open_store(settings: ServingSettings) -> CustomerStore | None:
    if settings.store is None:
        return None
    return open_store(settings.store, max_events=settings.store_max_events, ttl_days=settings.store_ttl_days)


def _tune_garbage_collector() -> None:
    """Keeps the garbage collector off the model and the libraries: a request of 100 events makes a
    few hundred objects, a `/rank_batch` call a hundred thousand, and with Python's defaults their
    collections kept walking the model and every imported library (docs/benchmarks.md, "Measurements
    behind the serving defaults")."""
    gc.freeze()  # what start-up made (model, libraries) lives as long as the worker: never scan it
    gc.set_threshold(100_000, 10, 10)  # young collections per 100,000 new objects, not per 700


def _each_or_alone(score: Any, records: list[ServedScoringRequest]) -> list[Any]:
    """`score(records)`; when the batch holds an unusable record, each record alone, so only the bad
    ones fail (with their own message)."""
    try:
        return list(score(records))
    except DataContractError as exc:
        if len(records) == 1:
            return [exc]
    results: list[Any] = []
    for record in records:
        try:
            results.extend(score([record]))
        except DataContractError as exc:
            results.append(exc)
    return results


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message).model_dump(exclude_none=True), status_code=status)


def _unavailable(exc: StoreError) -> JSONResponse:
    """503: the store is away; the request did nothing and may be sent again."""
    return _error(503, str(exc))


async def _stored(
    field: str,
    rows: list[dict[str, Any]],
    limit: int,
    write: Callable[[list[dict[str, Any]]], AppendResult | UpsertResult],
    answer: type[BaseModel],
) -> Any:
    """`write(rows)` off the event loop, answered as `answer`: 413 past `limit` rows (naming `field`),
    503 when the store cannot be reached."""
    if len(rows) > limit:
        return _error(413, f"{field}: {len(rows):,} in one call, more than the limit of {limit:,}")
    try:
        result = await asyncio.to_thread(write, rows)
    except StoreError as exc:
        return _unavailable(exc)
    return answer.model_validate(result.to_dict())


def _no_store() -> JSONResponse:
    return _error(404, "this service keeps no customer store (start it with `nextbest serve --store URI`)")


async def _customer(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    if service.store is None:
        return _no_store()
    customer_id = request.path_params["customer_id"]
    try:
        if request.method == "DELETE":
            erased = await asyncio.to_thread(service.store.erase, customer_id)
            return JSONResponse(ErasedResponse(customer_id=customer_id, **erased.to_dict()).model_dump())
        record = await asyncio.to_thread(service.store.customer, customer_id)
    except StoreError as exc:
        return _unavailable(exc)
    if record is None:
        return _error(404, f"customer {customer_id!r}: nothing stored")
    return JSONResponse(CustomerAnswer.model_validate(record.to_dict()).model_dump(mode="json"))


async def _metadata(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    return JSONResponse(service.metadata().model_dump(mode="json"))


# The class as `@bentoml.service` made it: mypy keeps a decorated class's own type.
_SERVICE = cast("bentoml.Service[NextbestService]", NextbestService)


async def _docs(request: Request) -> JSONResponse:
    return JSONResponse(_openapi_document())


@functools.cache
def _openapi_document() -> dict[str, Any]:
    return openapi.document(
        _SERVICE.openapi_spec.asdict(),
        {api.route: api.func for api in _SERVICE.apis.values()},
        {
            "/metadata": {"get": MetadataResponse},
            CUSTOMER_ROUTE: {"get": CustomerAnswer, "delete": ErasedResponse},
        },
    )


# BentoML's own routes are POST only; the GET routes come from a mounted app. BentoML's API routes match
# first, but the mount comes before its /docs.json, which this document replaces.
_SERVICE.mount_asgi_app(
    Starlette(
        routes=[
            Route("/metadata", _metadata, methods=["GET"]),
            Route("/docs.json", _docs, methods=["GET"]),
            Route(CUSTOMER_ROUTE, _customer, methods=["GET", "DELETE"]),
        ]
    ),
    path="/",
)
# The first added is the outermost: the API key answers first, so a caller without it learns nothing,
# the body limit included, and costs no body read.
_SERVICE.add_asgi_middleware(ApiKeyGuard, api_key=_settings.api_key)
_SERVICE.add_asgi_middleware(BodySizeGuard, max_bytes=_settings.max_body_bytes)
_SERVICE.add_asgi_middleware(LineBreakPathGuard)
