"""The simulated shop's catalogue: categories, products with prices, pages and search terms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

WEB_BASE = "https://shop.example.ru"
APP_BASE = "app://shop"

# (slug, product nouns, median price in RUB)
CATEGORIES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("smartphones", ("Smartphone", "Phone case", "Charger", "Screen protector"), 9000),
    ("laptops", ("Laptop", "Laptop bag", "Docking station", "Mouse"), 35000),
    ("audio", ("Headphones", "Earbuds", "Speaker", "Soundbar"), 4500),
    ("home", ("Lamp", "Pillow", "Blanket", "Curtains", "Vase"), 1800),
    ("kitchen", ("Frying pan", "Kettle", "Knife set", "Blender", "Mug"), 2500),
    ("women", ("Dress", "Blouse", "Skirt", "Coat", "Handbag"), 3500),
    ("men", ("Shirt", "Jeans", "Jacket", "Sweater", "Belt"), 3200),
    ("shoes", ("Sneakers", "Boots", "Sandals", "Loafers"), 5000),
    ("beauty", ("Face cream", "Shampoo", "Perfume", "Lipstick", "Serum"), 1200),
    ("kids", ("Kids T-shirt", "Baby stroller", "School backpack", "Kids shoes"), 2200),
    ("toys", ("Construction set", "Doll", "Board game", "Puzzle", "Plush bear"), 1500),
    ("sports", ("Yoga mat", "Dumbbells", "Bicycle", "Tennis racket", "Running shorts"), 2800),
    ("books", ("Novel", "Cookbook", "Children's book", "Comic", "Textbook"), 600),
    ("pets", ("Dog food", "Cat litter", "Pet bed", "Leash", "Aquarium"), 900),
)
ADJECTIVES = ("Classic", "Pro", "Eco", "Mini", "Max", "Soft", "Smart", "Urban", "Nordic", "Lite")
COLOURS = ("black", "white", "grey", "blue", "red", "green", "beige", "pink")
CLICK_TARGETS = (
    "product_card", "add_to_cart_button", "banner", "menu", "filter", "sort", "size_chart",
    "reviews_tab", "wishlist_button", "footer_link",
)
SEARCH_TYPOS = {"smartphone": "smartfone", "headphones": "hedphones", "sneakers": "snekers"}


@dataclass(frozen=True)
class Catalogue:
    products: pl.DataFrame  # product_idx, product_id, product_name, category, category_idx, price
    cat_offsets: np.ndarray  # first product index of each category (+ total at the end)
    cat_keys: np.ndarray  # category_idx + cumulative popularity within the category
    categories: tuple[str, ...]

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    def sample(self, u: np.ndarray, category: np.ndarray) -> np.ndarray:
        """A product index for each category given, by popularity (Zipf within a category),
        from one uniform per row."""
        idx = np.searchsorted(self.cat_keys, category + u, side="right")
        lo, hi = self.cat_offsets[category], self.cat_offsets[category + 1] - 1
        return np.clip(idx, lo, hi)


def build_catalogue(rng: np.random.Generator, per_category: int = 150) -> Catalogue:
    names, cats, prices, cat_idx = [], [], [], []
    keys = []
    for c, (slug, nouns, median) in enumerate(CATEGORIES):
        noun = rng.integers(0, len(nouns), per_category)
        adj = rng.integers(0, len(ADJECTIVES), per_category)
        col = rng.integers(0, len(COLOURS), per_category)
        price = median * rng.lognormal(0.0, 0.6, per_category)
        # Shop prices end in 9 (e.g. 1299.0, 18990.0).
        price = np.where(
            price < 1000, np.round(price / 10) * 10 - 1, np.round(price / 100) * 100 - 10
        )
        price = np.maximum(price, 49.0)
        for i in range(per_category):
            names.append(f"{nouns[noun[i]]} {ADJECTIVES[adj[i]]} {COLOURS[col[i]]}")
        cats += [slug] * per_category
        cat_idx += [c] * per_category
        prices.append(price)
        w = 1.0 / np.arange(1, per_category + 1) ** 1.1
        keys.append(c + np.cumsum(w) / w.sum())
    n = len(names)
    # Stable catalogue-like SKUs, not random: the same product keeps its id across seeds' shops.
    product_id = [f"SKU-{100000 + i * 7:06d}" for i in range(n)]
    products = pl.DataFrame(
        {
            "product_idx": np.arange(n, dtype=np.int64),
            "product_id": product_id,
            "product_name": names,
            "category": cats,
            "category_idx": np.array(cat_idx, dtype=np.int64),
            "price": np.concatenate(prices),
        }
    )
    offsets = np.arange(0, n + 1, per_category, dtype=np.int64)
    cat_keys = np.concatenate(keys)
    cat_keys[np.cumsum([per_category] * len(CATEGORIES)) - 1] = np.arange(1, len(CATEGORIES) + 1)
    return Catalogue(products, offsets, cat_keys, tuple(c[0] for c in CATEGORIES))
