"""A realistic collection of generated orders, built with the service's own
`order_document()` so every document has exactly the shape the worker stores.

Spread: customers Zipf-like (Zipf-Mandelbrot, s=1, q=20: the busiest of 50,000 holds ~0.6 %
of the orders, the median customer a handful), statuses weighted with a valid history path
each, `created_at` uniform over two years, currencies mostly EUR, names and e-mail addresses
from small word lists (so a surname search matches many customers)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.statuses import OrderStatus
from service.domain.order import HistoryEntry, Item, Order
from service.store.client import COUNTERS, ORDERS, Document, ensure_indexes
from service.store.documents import order_document

BATCH = 5_000
SEED = 20251106
SPAN_DAYS = 730
ZIPF_S = 1.0
ZIPF_Q = 20.0
CENT = Decimal("0.01")
VAT = Decimal("0.21")

FIRST_NAMES = (
    "Anna", "Bram", "Carla", "Daan", "Eva", "Finn", "Greta", "Hugo", "Iris", "Jan", "Kees",
    "Lotte", "Milan", "Noor", "Olaf", "Pieter", "Quinten", "Roos", "Sanne", "Thijs", "Uma",
    "Vera", "Willem", "Xander", "Yara", "Zoe", "John", "Mary", "Luca", "Sofia", "Emma",
    "Noah", "Liam", "Mila", "Lars", "Femke", "Ruben", "Julia", "Sem", "Tess",
)  # fmt: skip
LAST_NAMES = (
    "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer",
    "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
    "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer", "van der Linden",
    "Kok", "Jacobs", "de Haan", "Vermeulen", "van den Heuvel", "van der Veen", "van den Broek",
    "de Bruijn", "de Jong", "Schouten", "Willems", "van Dijk", "Hoekstra", "Maas", "Verhoeven",
    "Koster", "Prins", "Blom", "Huisman", "Peeters", "Kuipers", "van Wijk", "Postma",
    "Kramer", "van Beek", "Ackermann", "Schneider", "Fischer", "Weber", "Wagner", "Becker",
    "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Schroeder", "Neumann", "Schwarz",
    "Zimmermann", "Braun", "Hartmann", "Lange", "Schmitt", "Werner", "Krause", "Lehmann",
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
    "Anderson", "Thomas", "Moore", "Martin", "Thompson", "White", "Harris", "Clark", "Lewis",
    "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker",
    "Adams", "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips",
)  # fmt: skip
SEARCH_SUBSTRING = "ckerm"
"""A literal substring of one surname ("Ackermann"): a `search` that must scan names."""
DOMAINS = ("example.com", "mail.example", "post.example", "inbox.example", "web.example")
STREETS = ("Main Street", "Kerkstraat", "Dorpsstraat", "Stationsweg", "Molenweg", "Parklaan")
CITIES = (
    ("Amsterdam", "1012AB", "NL"), ("Rotterdam", "3011AA", "NL"), ("Utrecht", "3511AB", "NL"),
    ("Den Haag", "2511CV", "NL"), ("Eindhoven", "5611AZ", "NL"), ("Berlin", "10115", "DE"),
    ("Hamburg", "20095", "DE"), ("Antwerpen", "2000", "BE"), ("London", "SW1A 1AA", "GB"),
    ("Zurich", "8001", "CH"),
)  # fmt: skip
PRODUCTS: tuple[tuple[int | str, str, Decimal], ...] = (
    (1, "Premium Cleaning Service", Decimal("150.00")), (2, "Window Cleaning", Decimal("75.00")),
    (3, "Carpet Cleaning", Decimal("95.50")), (4, "Oven Cleaning", Decimal("60.00")),
    (5, "Deep Kitchen Clean", Decimal("180.00")), (6, "Gutter Clearing", Decimal("85.00")),
    (7, "Move-out Cleaning", Decimal("320.00")), (8, "Upholstery Care", Decimal("110.25")),
    (9, "Office Cleaning (hour)", Decimal("38.90")), (10, "Pressure Washing", Decimal("140.00")),
    ("SKU-11", "Eco Supplies Pack", Decimal("24.99")),
    ("SKU-12", "Mattress Refresh", Decimal("79.00")),
)  # fmt: skip
S = OrderStatus
STATUS_WEIGHTS = {
    S.COMPLETED: 40, S.PENDING: 15, S.PROCESSING: 8, S.CONFIRMED: 7, S.IN_PROGRESS: 10,
    S.CANCELLED: 12, S.REFUNDED: 4, S.ON_HOLD: 4,
}  # fmt: skip
PATHS: dict[OrderStatus, tuple[OrderStatus, ...]] = {
    S.PENDING: (S.PENDING,),
    S.PROCESSING: (S.PENDING, S.PROCESSING),
    S.CONFIRMED: (S.PENDING, S.CONFIRMED),
    S.IN_PROGRESS: (S.PENDING, S.CONFIRMED, S.IN_PROGRESS),
    S.COMPLETED: (S.PENDING, S.PROCESSING, S.IN_PROGRESS, S.COMPLETED),
    S.CANCELLED: (S.PENDING, S.CANCELLED),
    S.REFUNDED: (S.PENDING, S.PROCESSING, S.COMPLETED, S.REFUNDED),
    S.ON_HOLD: (S.PENDING, S.PROCESSING, S.ON_HOLD),
}
"""How an order reached its status: every step allowed by the transition table."""
CURRENCIES = (("EUR", 88), ("USD", 6), ("GBP", 4), ("CHF", 2))
SOURCES = ("webform", "shop", "backoffice", "api", "partner")
NOTES = (None, None, None, "Please call before arrival", "Key under the mat", "Ring twice")


@dataclass(frozen=True)
class Customer:
    customer_id: str
    user_id: str | None
    billing: dict[str, str | None]


@dataclass(frozen=True)
class Loaded:
    orders: int
    customers: int
    load_s: float
    index_s: float
    checkpoint_s: float
    busy_customer: str
    busy_customer_orders: int
    typical_customers: list[str]
    date_window: tuple[date, date]
    search: str
    end: datetime


def _customers(rng: random.Random, count: int) -> list[Customer]:
    numbers = rng.sample(range(10_000, 1_000_000), count)
    customers = []
    for number in numbers:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        city, postal, country = rng.choice(CITIES)
        handle = f"{first}.{last}".lower().replace(" ", "")
        billing: dict[str, str | None] = {
            "first_name": first,
            "last_name": last,
            "email": f"{handle}{rng.randrange(100)}@{rng.choice(DOMAINS)}",
            "phone": f"+316{rng.randrange(10**8):08d}",
            "address": f"{rng.randrange(1, 300)} {rng.choice(STREETS)}",
            "city": city,
            "postal_code": postal,
            "country": country,
        }
        user_id = f"USR-{number}" if rng.random() < 0.6 else None
        customers.append(Customer(f"CUST-{number}", user_id, billing))
    return customers


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Generator:
    def __init__(self, size: int, customers: int, seed: int, end: datetime) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.size = size
        self.end = end
        self.customers = _customers(self.rng, customers)
        weights = [1.0 / (rank + ZIPF_Q) ** ZIPF_S for rank in range(1, customers + 1)]
        self.customer_cum = list(itertools.accumulate(weights))
        self.status_cum = list(itertools.accumulate(STATUS_WEIGHTS.values()))
        self.statuses = list(STATUS_WEIGHTS)
        self.currency_cum = list(itertools.accumulate(w for _, w in CURRENCIES))
        self.order_ids = self.rng.sample(range(100_000_000, 1_000_000_000), size)

    def batch(self, start: int, count: int) -> list[Document]:
        rng = self.rng
        who = rng.choices(self.customers, cum_weights=self.customer_cum, k=count)
        statuses = rng.choices(self.statuses, cum_weights=self.status_cum, k=count)
        currencies = rng.choices([c for c, _ in CURRENCIES], cum_weights=self.currency_cum, k=count)
        return [
            order_document(self._order(start + i + 1, who[i], statuses[i], currencies[i]))
            for i in range(count)
        ]

    def _order(self, id: int, customer: Customer, status: OrderStatus, currency: str) -> Order:
        rng = self.rng
        lines = rng.choices((1, 2, 3), weights=(60, 30, 10))[0]
        items = tuple(
            Item(product_id, name, rng.choice((1, 1, 1, 2, 3)), price)
            for product_id, name, price in rng.sample(PRODUCTS, lines)
        )
        subtotal = sum((item.amount for item in items), Decimal(0))
        tax = (subtotal * VAT).quantize(CENT)
        created = _ms(self.end - timedelta(seconds=rng.random() * SPAN_DAYS * 86_400))
        history: list[HistoryEntry] = []
        at = created
        notes = rng.choice(NOTES)
        previous: OrderStatus | None = None
        for step in PATHS[status]:
            if previous is not None:
                at = min(_ms(at + timedelta(hours=rng.uniform(0.5, 72))), self.end)
            action = "place" if previous is None else "update_status"
            reason = "Customer request" if step is S.CANCELLED else None
            history.append(HistoryEntry(previous, step, at, action, notes, reason))
            previous = step
        metadata: dict[str, Any] = {"source": rng.choice(SOURCES)}
        if rng.random() < 0.2:
            metadata["campaign_id"] = f"CAMPAIGN{rng.randrange(40)}"
        return Order(
            id=id,
            order_id=self.order_ids[id - 1],
            customer_id=customer.customer_id,
            user_id=customer.user_id,
            items=items,
            billing=customer.billing,
            subtotal=subtotal,
            total_tax=tax,
            total=subtotal + tax,
            currency=currency,
            status=status,
            notes=notes,
            metadata=metadata,
            version=len(history),
            status_history=tuple(history),
            created_at=created,
            updated_at=at,
        )


async def load(
    db: AsyncDatabase[Document],
    size: int,
    customers: int,
    seed: int = SEED,
    progress: Any = None,
) -> Loaded:
    """Bulk-load `size` orders with `insert_many` in batches (building the next batch while
    MongoDB writes the previous one), then `ensure_indexes`, each timed."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    generator = Generator(size, customers, seed, end)
    orders = db[ORDERS]
    await orders.drop()
    started = time.perf_counter()
    writing: asyncio.Task[Any] | None = None
    for start in range(0, size, BATCH):
        docs = await asyncio.to_thread(generator.batch, start, min(BATCH, size - start))
        if writing is not None:
            await writing
        writing = asyncio.create_task(orders.insert_many(docs, ordered=False))
        if progress is not None and start and start % (BATCH * 40) == 0:
            progress(f"loaded {start:,} of {size:,} orders")
    if writing is not None:
        await writing
    load_s = time.perf_counter() - started
    await db[COUNTERS].update_one({"_id": ORDERS}, {"$set": {"seq": size}}, upsert=True)

    started = time.perf_counter()
    await ensure_indexes(db)
    index_s = time.perf_counter() - started

    # Flush what the load left dirty now, so no checkpoint lands inside a measurement.
    started = time.perf_counter()
    await db.client.admin.command("fsync")
    checkpoint_s = time.perf_counter() - started

    busy = generator.customers[0].customer_id
    busy_orders = await orders.count_documents({"customer_id": busy})
    typical = [c.customer_id for c in _sample(generator.rng, generator.customers, 500)]
    first = (end - timedelta(days=SPAN_DAYS // 2)).date()
    return Loaded(
        orders=size,
        customers=customers,
        load_s=load_s,
        index_s=index_s,
        checkpoint_s=checkpoint_s,
        busy_customer=busy,
        busy_customer_orders=busy_orders,
        typical_customers=typical,
        date_window=(first, first + timedelta(days=6)),
        search=SEARCH_SUBSTRING,
        end=end,
    )


def _sample(rng: random.Random, customers: Sequence[Customer], count: int) -> list[Customer]:
    return rng.sample(list(customers), min(count, len(customers)))
