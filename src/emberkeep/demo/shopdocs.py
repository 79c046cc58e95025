"""The candle shop's MongoDB documents, one maker per collection.

Each maker takes the collection's own seeded ``random.Random`` and the document's index and
returns one document; the same seed makes the same documents (ObjectIds and times included,
nothing reads the clock). Between them the documents hold every BSON type a web shop stores:
ObjectId, datetime, Decimal128 money (a double where the server lacks Decimal128), int32,
int64, double, strings, nested documents and arrays, binary (generic and UUID), booleans,
nulls, regular expressions and timestamps. Where the server stores them (``Shop.extras``,
probed by ``shopdb``), also: dates before 1970, binary subtypes 3, 5 and 0x80, a regex with
every flag, MinKey/MaxKey, JavaScript code, DBRefs, arrays of arrays, and field names
holding ``$`` and ``.``.
"""

from __future__ import annotations

import functools
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)  # "now" for the generated shop: no clock is read
HISTORY = timedelta(days=3 * 365)  # how far back the shop's records go
SESSION_LIFE = timedelta(days=3650)  # so a TTL monitor never expires a session mid-test

Money = Callable[[int], Any]  # cents -> Decimal128 (or float where unsupported)
Doc = dict[str, Any]

SCENTS = ["vanilla", "lavender", "sandalwood", "cedar", "rose", "citrus", "pine", "amber"]
NOTES = ["bergamot", "musk", "tonka", "vetiver", "jasmine", "fig", "oud", "sea salt", "clove"]
SHAPES = ["pillar", "jar", "taper", "tin", "votive"]
SIZES_OZ = [4, 8, 12, 16, 22]
WAXES = ["soy", "coconut", "beeswax", "paraffin blend"]
PROSE = (
    "hand poured small batch clean burn cotton wick warm glow cozy evening calm fresh "
    "notes of home gift crackling wood natural wax long lasting fragrance throw room "
    "holiday limited edition bright soft rich deep smooth sweet earthy floral spicy"
)
WORDS = PROSE.split()
FIRST = ["ava", "liam", "mia", "noah", "zoe", "eli", "ivy", "leo", "ruth", "omar", "ines", "kai"]
LAST = ["smith", "garcia", "kim", "novak", "okafor", "rossi", "silva", "tanaka", "weber", "ali"]
CITIES = [
    ("Portland", "OR", 45.52, -122.68),
    ("Austin", "TX", 30.27, -97.74),
    ("Denver", "CO", 39.74, -104.99),
    ("Boston", "MA", 42.36, -71.06),
]
STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4)"]
EVENT_TYPES = ["page_view", "search", "add_to_cart", "checkout", "login", "wishlist"]

DECIMAL_EXPONENT_CENTS = 6176 - 2  # IEEE 754-2008 decimal128 exponent bias, minus 2 digits

KIND_PRODUCT, KIND_INVENTORY, KIND_PROMOTION, KIND_CUSTOMER = 1, 2, 3, 4
KIND_ORDER, KIND_CART, KIND_REVIEW, KIND_SESSION, KIND_EVENT = 5, 6, 7, 8, 9


def object_id(at: datetime, kind: int, salt: int, n: int) -> ObjectId:
    """A deterministic ObjectId: creation second, collection kind, seed salt, counter."""
    seconds = int(at.timestamp())
    return ObjectId(struct.pack(">IBH", seconds, kind, salt & 0xFFFF) + n.to_bytes(5, "big"))


@functools.lru_cache(maxsize=1 << 16)  # prices repeat: share the immutable values
def decimal_money(cents: int) -> Decimal128:
    """``cents`` / 100 with exponent -2, as ``Decimal128("19.99")`` makes it, but ~20x faster."""
    magnitude = abs(cents)
    high = (DECIMAL_EXPONENT_CENTS << 49) | (magnitude >> 64)
    if cents < 0:
        high |= 1 << 63
    return Decimal128.from_bid(struct.pack("<QQ", magnitude & 0xFFFF_FFFF_FFFF_FFFF, high))


def float_money(cents: int) -> float:
    return cents / 100


@dataclass
class Product:
    id: ObjectId
    name: str
    skus: list[str]
    prices: list[int]  # cents, one per variant


@dataclass
class Shop:
    """What documents refer to across collections; small even for a multi-GB database."""

    salt: int
    money: Money
    extras: frozenset[str] = frozenset()  # the shopdb.EXTRAS features the server stores
    products: list[Product] = field(default_factory=list)
    customer_ids: bytearray = field(default_factory=bytearray)  # 12 bytes per customer

    def customer(self, rng: random.Random) -> ObjectId:
        k = rng.randrange(len(self.customer_ids) // 12)
        return ObjectId(bytes(self.customer_ids[k * 12 : k * 12 + 12]))

    def product(self, rng: random.Random) -> Product:
        return rng.choice(self.products)


# -- small pieces ------------------------------------------------------------------------


def when(
    rng: random.Random, after: datetime = ANCHOR - HISTORY, before: datetime = ANCHOR
) -> datetime:
    """A millisecond-precise time in [after, before)."""
    span_ms = max(int((before - after).total_seconds() * 1000), 1)
    return after + timedelta(milliseconds=rng.randrange(span_ms))


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def token(rng: random.Random, n: int = 24) -> str:
    return rng.randbytes(n).hex()


def address(rng: random.Random, default: bool) -> Doc:
    city, region, lat, lng = rng.choice(CITIES)
    return {
        "label": "home" if default else rng.choice(["work", "gift", "cabin"]),
        "line1": f"{rng.randint(1, 9999)} {rng.choice(LAST).title()} St",
        "line2": rng.choice([None, None, f"Apt {rng.randint(1, 400)}"]),
        "city": city,
        "region": region,
        "postal_code": f"{rng.randint(10000, 99999)}",
        "country": "US",
        "default": default,
        "geo": {
            "type": "Point",
            "coordinates": [lng + rng.uniform(-0.2, 0.2), lat + rng.uniform(-0.2, 0.2)],
        },
    }


# -- products, inventory, promotions -----------------------------------------------------


def product(rng: random.Random, n: int, shop: Shop) -> Doc:
    scent, shape = rng.choice(SCENTS), rng.choice(SHAPES)
    created = when(rng)
    sku = f"CND-{scent[:3].upper()}-{shape[:3].upper()}-{n:05d}"
    name = f"{scent.title()} {rng.choice(NOTES).title()} {shape.title()} Candle"
    variants = [
        variant(rng, sku, oz, shop) for oz in sorted(rng.sample(SIZES_OZ, rng.randint(1, 4)))
    ]
    cents = [v.pop("_cents") for v in variants]
    doc: Doc = {
        "_id": object_id(created, KIND_PRODUCT, shop.salt, n),
        "sku": sku,
        "name": name,
        "slug": name.lower().replace(" ", "-") + f"-{n}",
        "description": words(rng, 40, 140),
        "category": shape,
        "scents": sorted({scent, rng.choice(SCENTS)}),
        "scent_notes": {k: rng.sample(NOTES, 2) for k in ("top", "heart", "base")},
        "tags": rng.sample(["bestseller", "new", "gift", "seasonal", "vegan", "sale"], 2),
        "price": shop.money(cents[0]),
        "compare_at_price": rng.choice([None, shop.money(cents[0] + 500)]),
        "currency": "USD",
        "variants": variants,
        "images": [image(rng, sku, i) for i in range(rng.randint(1, 4))],
        "thumbnail": Binary(b"RIFF" + rng.randbytes(rng.randint(300, 1500)), 0),
        "attributes": {
            "wax": rng.choice(WAXES),
            "vegan": rng.random() < 0.7,
            "wicks": rng.randint(1, 3),
        },
        "rating": {"average": round(rng.uniform(3.0, 5.0), 2), "count": rng.randint(0, 900)},
        "active": rng.random() < 0.9,
        "featured": rng.random() < 0.1,
        "created_at": created,
        "updated_at": when(rng, created),
        "discontinued_at": None,
    }
    if "bson:nested_array" in shop.extras:  # per variant: [width, height], [[lid], [base]]
        doc["box_cm"] = [[v["size_oz"] + 4, v["size_oz"] * 2] for v in variants]
        doc["box_cm"].append([[rng.randint(6, 12)], [rng.randint(6, 12)]])
    if "field:dollar_dot" in shop.extras:  # keys as a storefront's i18n export writes them
        doc["labels"] = {"$locale": "en-US", "burn.time": f"{rng.randint(20, 90)}h"}
    shop.products.append(Product(doc["_id"], name, [v["sku"] for v in variants], cents))
    return doc


def variant(rng: random.Random, sku: str, oz: int, shop: Shop) -> Doc:
    cents = 900 + oz * rng.randint(150, 260)
    return {
        "sku": f"{sku}-{oz}OZ",
        "size_oz": oz,
        "wax": rng.choice(WAXES),
        "burn_hours": oz * rng.randint(5, 8),
        "weight_g": round(oz * 28.35 * rng.uniform(1.1, 1.4), 1),
        "price": shop.money(cents),
        "barcode": f"0{rng.randint(10**10, 10**11 - 1)}",
        "in_stock": rng.random() < 0.85,
        "_cents": cents,
    }


def image(rng: random.Random, sku: str, i: int) -> Doc:
    return {
        "url": f"/media/products/{sku.lower()}-{i}.jpg",
        "alt": words(rng, 3, 8),
        "width": 1600,
        "height": rng.choice([1200, 1600, 2000]),
        "bytes": Int64(rng.randint(80_000, 4_000_000)),
    }


def inventory(rng: random.Random, n: int, shop: Shop, prod: Product, sku: str) -> Doc:
    counted = when(rng, ANCHOR - timedelta(days=60))
    return {
        "_id": object_id(counted, KIND_INVENTORY, shop.salt, n),
        "product_id": prod.id,
        "sku": sku,
        "warehouse": rng.choice(["PDX-1", "PDX-2", "AUS-1"]),
        "bin": f"{rng.choice('ABCDEF')}-{rng.randint(1, 40):02d}-{rng.randint(1, 9)}",
        "on_hand": rng.randint(0, 400),
        "reserved": rng.randint(0, 20),
        "reorder_point": rng.choice([10, 25, 50]),
        "last_counted_at": counted,
        # the warehouse sync stores the cluster time of the change it applied last
        "synced_ts": Timestamp(int(counted.timestamp()), n + 1),
        "history": [
            {
                "at": when(rng, counted - timedelta(days=30), counted),
                "delta": rng.randint(-12, 48),
                "reason": rng.choice(["sale", "restock", "damage", "count"]),
            }
            for _ in range(rng.randint(1, 5))
        ],
    }


def promotion(rng: random.Random, n: int, shop: Shop) -> Doc:
    starts = when(rng, ANCHOR - timedelta(days=400))
    scents = "|".join(s[:3].upper() for s in rng.sample(SCENTS, rng.randint(1, 3)))
    percent = rng.choice([None, 10, 15, 20, 25])
    doc: Doc = {
        "_id": object_id(starts, KIND_PROMOTION, shop.salt, n),
        "code": f"CANDLE{n:03d}{rng.choice(['SPRING', 'HOLIDAY', 'WELCOME'])}",
        "description": words(rng, 5, 15),
        "percent_off": percent,
        "amount_off": shop.money(rng.choice([500, 1000])) if percent is None else None,
        "applies_to_sku": Regex(f"^CND-({scents})-", "i"),
        "starts_at": starts,
        "ends_at": rng.choice([None, starts + timedelta(days=rng.randint(7, 60))]),
        "active": rng.random() < 0.5,
        "max_uses": Int64(rng.choice([100, 1000, 5_000_000_000])),
        "uses": rng.randint(0, 100),
    }
    if "bson:regex_flags" in shop.extras:
        doc["applies_to_name"] = Regex(r"^(soy|beeswax) .*candle$", "imsx")
    if "bson:minkey_maxkey" in shop.extras:  # order-total tiers, open at both ends
        doc["tiers"] = [
            {"from": MinKey(), "to": 2000, "percent": 0},
            {"from": 2000, "to": 5000, "percent": 5},
            {"from": 5000, "to": MaxKey(), "percent": 10},
        ]
    if "bson:code" in shop.extras:  # a legacy eligibility check, kept as stored
        doc["eligible"] = Code(f"function () {{ return this.total >= {rng.randint(20, 80)}; }}")
    return doc


# -- customers, orders, carts, reviews, sessions, events ---------------------------------


def customer(rng: random.Random, n: int, shop: Shop) -> Doc:
    created = when(rng, ANCHOR - HISTORY, ANCHOR - timedelta(days=30))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    oid = object_id(created, KIND_CUSTOMER, shop.salt, n)
    shop.customer_ids += oid.binary
    doc: Doc = {
        "_id": oid,
        "uuid": Binary(uuid.UUID(bytes=rng.randbytes(16), version=4).bytes, 4),
        "email": f"{first}.{last}.{n}@example.com",
        "name": {"first": first.title(), "last": last.title()},
        "phone": rng.choice([None, f"+1-555-{rng.randint(1000000, 9999999)}"]),
        "password": {
            "algo": "scrypt",
            "salt": Binary(rng.randbytes(16)),
            "hash": Binary(rng.randbytes(32)),
        },
        "addresses": [address(rng, i == 0) for i in range(rng.randint(1, 3))],
        "marketing_opt_in": rng.random() < 0.4,
        "email_verified": rng.random() < 0.9,
        "loyalty": {
            "tier": rng.choice(["ember", "flame", "blaze"]),
            "points": rng.randint(0, 5000),
        },
        "lifetime_value_cents": Int64(rng.randint(0, 250_000)),
        "preferences": {"scents": rng.sample(SCENTS, 2), "newsletter": rng.random() < 0.5},
        "stripe_customer_id": rng.choice([None, f"cus_{token(rng, 7)}"]),
        "created_at": created,
        "last_login_at": rng.choice([None, when(rng, created)]),
    }
    if "bson:date_before_1970" in shop.extras:
        doc["birth_date"] = when(
            rng, datetime(1935, 1, 1, tzinfo=UTC), datetime(2006, 1, 1, tzinfo=UTC)
        )
    if "bson:binary_subtypes" in shop.extras:  # a legacy UUID (3) and a user-defined token
        doc["legacy_id"] = Binary(rng.randbytes(16), 3)
        doc["device_token"] = Binary(rng.randbytes(rng.randint(8, 40)), 0x80)
    return doc


def line_item(rng: random.Random, shop: Shop) -> tuple[Doc, int]:
    prod = shop.product(rng)
    k = rng.randrange(len(prod.skus))
    qty = rng.choice([1, 1, 1, 2, 2, 3, 6])
    cents = prod.prices[k]
    item = {
        "product_id": prod.id,
        "sku": prod.skus[k],
        "name": prod.name,
        "quantity": qty,
        "unit_price": shop.money(cents),
        "line_total": shop.money(cents * qty),
        "gift_wrap": rng.random() < 0.1,
    }
    return item, cents * qty


def order(rng: random.Random, n: int, shop: Shop) -> Doc:
    cust = shop.customer(rng)
    created = when(rng, cust.generation_time)
    items, totals = zip(*(line_item(rng, shop) for _ in range(rng.randint(1, 6))), strict=True)
    subtotal, shipping = sum(totals), rng.choice([0, 595, 895])
    discount = rng.choice([0, 0, 0, subtotal // 10])
    tax_rate = rng.choice([0.0, 0.0625, 0.0825, 0.1])
    tax = round((subtotal - discount) * tax_rate)
    status = rng.choice(STATUSES)
    paid = status not in ("pending", "cancelled")
    return {
        "_id": object_id(created, KIND_ORDER, shop.salt, n),
        "order_number": Int64(100_000_000_000 + n),
        "customer_id": cust,
        "status": status,
        "items": list(items),
        "subtotal": shop.money(subtotal),
        "shipping": shop.money(shipping),
        "discount": shop.money(discount),
        "tax": shop.money(tax),
        "total": shop.money(subtotal - discount + shipping + tax),
        "tax_rate": tax_rate,
        "currency": "USD",
        "coupon_code": f"CANDLE{rng.randint(0, 11):03d}WELCOME" if discount else None,
        "shipping_address": address(rng, True),
        "payment": payment(rng, created, paid),
        "fulfillment": fulfillment(rng, created, status),
        "notes": rng.choice([None, None, None, words(rng, 4, 20)]),
        "client": {"ip": f"203.0.113.{rng.randint(1, 254)}", "user_agent": rng.choice(AGENTS)},
        "created_at": created,
        "updated_at": created + timedelta(minutes=rng.randint(0, 20000)),
    }


def payment(rng: random.Random, created: datetime, paid: bool) -> Doc:
    return {
        "method": rng.choice(["card", "card", "paypal", "gift_card"]),
        "provider": "stripe",
        "charge_id": f"ch_{token(rng, 12)}",
        "last4": f"{rng.randint(0, 9999):04d}",
        "captured": paid,
        "paid_at": created + timedelta(seconds=rng.randint(1, 90)) if paid else None,
    }


def fulfillment(rng: random.Random, created: datetime, status: str) -> Doc:
    shipped = created + timedelta(hours=rng.randint(6, 72))
    return {
        "carrier": rng.choice(["USPS", "UPS", "FedEx"]),
        "tracking": f"1Z{token(rng, 8).upper()}" if status in ("shipped", "delivered") else None,
        "shipped_at": shipped if status in ("shipped", "delivered") else None,
        "delivered_at": shipped + timedelta(days=rng.randint(1, 6))
        if status == "delivered"
        else None,
    }


def cart(rng: random.Random, n: int, shop: Shop) -> Doc:
    updated = when(rng, ANCHOR - timedelta(days=90))
    items = []
    for _ in range(rng.randint(0, 5)):
        item, _total = line_item(rng, shop)
        items.append({k: item[k] for k in ("product_id", "sku", "quantity", "unit_price")})
        items[-1]["added_at"] = updated - timedelta(minutes=rng.randint(0, 600))
    return {
        "_id": object_id(updated, KIND_CART, shop.salt, n),
        "session_token": token(rng, 16),
        "customer_id": shop.customer(rng) if rng.random() < 0.6 else None,
        "items": items,
        "coupon_code": None,
        "abandoned": rng.random() < 0.7,
        "updated_at": updated,
    }


def review(rng: random.Random, n: int, shop: Shop) -> Doc:
    created = when(rng)
    doc: Doc = {
        "_id": object_id(created, KIND_REVIEW, shop.salt, n),
        "product_id": shop.product(rng).id,
        "customer_id": shop.customer(rng),
        "rating": rng.choice([1, 2, 3, 4, 4, 5, 5, 5]),
        "title": words(rng, 2, 7),
        "body": words(rng, 10, 80),
        "verified_purchase": rng.random() < 0.8,
        "helpful_votes": rng.randint(0, 60),
        "photos": [
            f"/media/uploads/review-{n}-{i}.jpg" for i in range(rng.choice([0, 0, 0, 1, 2]))
        ],
        "response": rng.choice([None, None, {"body": words(rng, 5, 25), "at": when(rng, created)}]),
        "created_at": created,
    }
    if "bson:dbref" in shop.extras:  # as an ODM stores a reference
        doc["product_ref"] = DBRef("products", doc["product_id"])
    if "bson:binary_subtypes" in shop.extras:  # the photos' digests, as MD5
        doc["photo_md5"] = [Binary(rng.randbytes(16), 5) for _ in doc["photos"]]
    return doc


def session(rng: random.Random, n: int, shop: Shop) -> Doc:
    created = when(rng, ANCHOR - timedelta(days=30))
    seen = when(rng, created)
    return {
        "_id": object_id(created, KIND_SESSION, shop.salt, n),
        "token_hash": Binary(rng.randbytes(32), 0),
        "customer_id": shop.customer(rng) if rng.random() < 0.5 else None,
        "created_at": created,
        "last_seen_at": seen,
        "last_seen_ms": Int64(int(seen.timestamp() * 1000)),
        "expires_at": created + SESSION_LIFE,
        "client": {"ip": f"198.51.100.{rng.randint(1, 254)}", "user_agent": rng.choice(AGENTS)},
        "data": {
            "currency": "USD",
            "locale": rng.choice(["en-US", "en-CA", "es-US"]),
            "csrf": token(rng, 16),
            "recently_viewed": [shop.product(rng).id for _ in range(rng.randint(0, 4))],
            "flash": [],
        },
    }


def event(rng: random.Random, n: int, shop: Shop) -> Doc:
    at = ANCHOR - timedelta(days=7) + timedelta(milliseconds=n * 1500 + rng.randrange(1500))
    kind = rng.choice(EVENT_TYPES)
    return {
        "_id": object_id(at, KIND_EVENT, shop.salt, n),
        "at": at,
        "type": kind,
        "path": f"/products/{shop.product(rng).id}" if kind != "search" else "/search",
        "query": words(rng, 1, 3) if kind == "search" else None,
        "customer_id": shop.customer(rng) if rng.random() < 0.3 else None,
        "duration_ms": rng.randint(5, 3000),
        "bot": rng.random() < 0.05,
    }
