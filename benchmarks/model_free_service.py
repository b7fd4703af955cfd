"""The load test's baseline: a BentoML service that parses the same request as `/rank`, into the same
type, and does no model work. Started by `benchmarks/serving_load.py` with
`bentoml serve model_free_service:ModelFreeService`."""

from __future__ import annotations

import bentoml

from nextbest.scoring.schemas import ServedScoringRequest


@bentoml.service(name="model_free", traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class ModelFreeService:
    @bentoml.api(route="/rank")
    async def rank(self, request: ServedScoringRequest, /) -> dict[str, object]:
        return {"customer_id": request.customer_id, "events": len(request.events)}
