"""Personalised message text: the campaign's template filled per person with their top
recommended product (ml.user_recommendations + crm.dim_products), in their language when the
campaign has a translation for it, else the campaign's own text.

Templates use Python's `{field}` syntax; a field that does not exist is an error naming the
campaign, the template and the field before anything is planned.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import psycopg

from push.campaign import Campaign

# Fields a template may use, all from the person's top recommendation.
FIELDS = ("product_name", "price", "product_id", "category")


class MessageTemplateError(ValueError):
    """A template naming a field that does not exist, or malformed braces."""


@dataclass(frozen=True)
class Product:
    product_id: str
    product_name: str
    price: float | None
    category: str | None

    def fields(self) -> dict[str, str]:
        return {
            "product_id": self.product_id,
            "product_name": self.product_name,
            "price": "" if self.price is None else f"{self.price:.2f}",
            "category": self.category or "",
        }


def _template_fields(text: str, where: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise MessageTemplateError(f"{where}: {exc}: {text!r}") from exc
    bad = sorted(n for n in names if n not in FIELDS)
    if bad:
        raise MessageTemplateError(
            f"{where}: unknown template field(s) {', '.join('{' + b + '}' for b in bad)}; "
            f"available: {', '.join('{' + f + '}' for f in FIELDS)}"
        )
    return names


def check_templates(campaign: Campaign) -> set[str]:
    """Validate every template of the campaign; returns the fields they use."""
    used: set[str] = set()
    msg = campaign.message
    for part in ("title", "body"):
        used |= _template_fields(getattr(msg, part), f"campaign {campaign.name}: message.{part}")
    for lang, texts in msg.translations.items():
        for part, text in texts.items():
            used |= _template_fields(
                text, f"campaign {campaign.name}: message.translations.{lang}.{part}"
            )
    return used


def top_products(conn: psycopg.Connection, people: list[str]) -> dict[str, Product]:
    """Each person's best-ranked recommended product that has a name, following id changes."""
    if conn.execute("SELECT to_regclass('ml.user_recommendations') IS NULL").fetchone()[0]:
        return {}
    rows = conn.execute(
        """SELECT DISTINCT ON (person) person, p.product_id, p.product_name, p.price, p.category
           FROM (SELECT coalesce(h.new_user_id::text, r.user_id) AS person, r.product_id,
                        r.rank, (h.new_user_id IS NOT NULL) AS via_old_id
                 FROM ml.user_recommendations r
                 LEFT JOIN crm.user_id_history h ON h.old_user_id::text = r.user_id) r
           JOIN crm.dim_products p ON p.product_id = r.product_id
           WHERE p.product_name IS NOT NULL AND r.person = ANY(%s)
           ORDER BY person, r.via_old_id, r.rank""",
        (people,),
    ).fetchall()
    return {
        person: Product(pid, name, None if price is None else float(price), category)
        for person, pid, name, price, category in rows
    }


def render(campaign: Campaign, language: str | None, product: Product | None) -> tuple[str, str]:
    """(title, body) for one person; KeyError-free once check_templates passed."""
    msg = campaign.message
    texts = msg.translations.get(language or "", {})
    title = texts.get("title", msg.title)
    body = texts.get("body", msg.body)
    values = product.fields() if product else dict.fromkeys(FIELDS, "")
    return title.format_map(values), body.format_map(values)
