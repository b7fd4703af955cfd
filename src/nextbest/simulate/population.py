"""Customers: latent traits that drive behaviour, and the observable profile correlated with them.

The traits are never written out; a model has to infer them from the profile and the history. Age and
region drive price sensitivity and channel habits, tenure drives intent and satisfaction, and the segment
summarises intent, engagement and price sensitivity, so each profile column carries signal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from statistics import NormalDist

import numpy as np
import pyarrow as pa

from nextbest.simulate._arrays import BoolArray, FloatArray, IntArray, sigmoid

SEGMENTS: tuple[str, ...] = ("bronze", "silver", "gold")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
DEVICES: tuple[str, ...] = ("app", "mobile_web", "desktop")

_REGION_SHARES = np.array([0.2, 0.25, 0.2, 0.2, 0.15])
_REGION_INCOME = np.array([0.4, -0.5, 0.1, 0.3, -0.2])
_AGE_SHARES = (0.12, 0.22, 0.22, 0.18, 0.14, 0.12)
_SEGMENT_CUTS = np.array([0.05, 1.15])  # on the segment score: about 50% bronze, 35% silver, 15% gold


@dataclass(frozen=True)
class LatentTraits:
    """Hidden per-customer traits (standard-normal scale unless noted).

    Attributes:
        intent: Propensity to buy.
        engagement: How often the customer comes back.
        price_sensitivity: In (0, 1): how much a discount sways the customer.
        app_affinity: Preference for the app over the web.
        email_affinity: Propensity to open and click emails.
        dissatisfaction: Propensity to need support, complain and leave.
    """

    intent: FloatArray
    engagement: FloatArray
    price_sensitivity: FloatArray
    app_affinity: FloatArray
    email_affinity: FloatArray
    dissatisfaction: FloatArray

    def take(self, rows: IntArray) -> LatentTraits:
        """The traits of the customers at `rows`."""
        return LatentTraits(*(getattr(self, f.name)[rows] for f in fields(self)))


@dataclass(frozen=True)
class Profiles:
    """Observable static attributes, as codes into the vocabularies above.

    Attributes:
        segment: Index into SEGMENTS.
        region: Index into REGIONS.
        age_band: Index into AGE_BANDS.
        device: Index into DEVICES.
        email_opt_in: Whether marketing emails may be sent.
        tenure_days: Days from signup to the world's start.
    """

    segment: IntArray
    region: IntArray
    age_band: IntArray
    device: IntArray
    email_opt_in: BoolArray
    tenure_days: IntArray

    def take(self, rows: IntArray) -> Profiles:
        """The profiles of the customers at `rows`."""
        return Profiles(*(getattr(self, f.name)[rows] for f in fields(self)))

    def to_table(self, customer_ids: pa.Array, start: datetime) -> pa.Table:
        """The `customers` table: one row per customer, strings and numbers only."""
        signup = np.datetime64(start.date(), "D") - self.tenure_days.astype("timedelta64[D]")
        return pa.table(
            {
                "customer_id": customer_ids,
                "segment": _decode(self.segment, SEGMENTS),
                "region": _decode(self.region, REGIONS),
                "age_band": _decode(self.age_band, AGE_BANDS),
                "device_preference": _decode(self.device, DEVICES),
                "email_opt_in": pa.array(self.email_opt_in.astype(np.int8)),
                "signup_date": pa.array(signup, pa.date32()),
                "tenure_days": pa.array(self.tenure_days.astype(np.int32)),
            }
        )


@dataclass(frozen=True)
class Population:
    """Customer ids with their traits and profiles, aligned by customer index."""

    customer_ids: pa.Array
    traits: LatentTraits
    profiles: Profiles

    @property
    def size(self) -> int:
        return len(self.customer_ids)


def customer_ids(n: int, prefix: str = "c") -> pa.Array:
    """`prefix` + "000001", "000002", ...: zero-padded so that string order is numeric order."""
    width = max(6, len(str(n)))
    digits = np.char.zfill(np.arange(1, n + 1).astype(str), width)
    return pa.array(np.char.add(prefix, digits), pa.string())


def draw_population(n: int, rng: np.random.Generator, prefix: str = "c") -> Population:
    """Draws `n` customers (ids `customer_ids(n, prefix)`): correlated latent traits first, then profiles
    from them."""
    z_age, z_tenure, *noise = rng.standard_normal((9, n))
    region = rng.choice(len(REGIONS), size=n, p=_REGION_SHARES).astype(np.int64)
    income = _REGION_INCOME[region]
    price_raw = -0.45 * z_age - 0.9 * income + 0.8 * noise[3]
    intent = 0.3 * z_tenure + 0.95 * noise[0]
    app = -0.6 * z_age + 0.8 * noise[1]
    traits = LatentTraits(
        intent=intent,
        engagement=0.4 * intent + 0.3 * app + 0.87 * noise[4],
        price_sensitivity=sigmoid(1.4 * price_raw),
        app_affinity=app,
        email_affinity=0.35 * z_age + 0.94 * noise[2],
        dissatisfaction=-0.25 * z_tenure + 0.97 * noise[5],
    )
    segment_score = 0.7 * intent + 0.4 * traits.engagement - 0.9 * price_raw + 0.3 * z_tenure + 0.4 * noise[6]
    profiles = Profiles(
        segment=np.searchsorted(_SEGMENT_CUTS, segment_score).astype(np.int64),
        region=region,
        age_band=np.searchsorted(_normal_cuts(_AGE_SHARES), z_age).astype(np.int64),
        device=_draw_device(rng, app, z_age),
        email_opt_in=rng.random(n) < sigmoid(0.6 + 1.3 * traits.email_affinity),
        tenure_days=np.clip(np.round(np.exp(6.0 + 1.0 * z_tenure)), 1, 3650).astype(np.int64),
    )
    return Population(customer_ids(n, prefix), traits, profiles)


def _draw_device(rng: np.random.Generator, app: FloatArray, z_age: FloatArray) -> IntArray:
    uses_app = rng.random(app.size) < sigmoid(1.6 * app - 0.6)
    desktop = rng.random(app.size) < sigmoid(0.8 * z_age)
    return np.where(uses_app, 0, np.where(desktop, 2, 1)).astype(np.int64)


def _normal_cuts(shares: tuple[float, ...]) -> FloatArray:
    """Standard-normal cut points that split N(0, 1) into the given shares."""
    cumulative = np.cumsum(shares)[:-1]
    return np.array([NormalDist().inv_cdf(float(c)) for c in cumulative])


def _decode(codes: IntArray, vocabulary: tuple[str, ...]) -> pa.Array:
    return pa.array(vocabulary, pa.string()).take(pa.array(codes))
