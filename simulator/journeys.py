"""Sessions and the events they produce, built column-wise for a chunk of people at a time.

Each kind of event is one polars frame built from numpy index arrays; the frames are then
concatenated into one frame with a fixed schema. Hidden columns start with `_` and never
reach the output. Every random number is keyed by its owner (person or device) and the
row's rank among that owner's rows (`keyed.Draws`), so a person's events are the same
whichever chunk they are simulated in; cross-person facts (devices, households, campaigns,
who holds a shared device) come from the global pass in `stream.World`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.ids import hex_from_bits, pick
from simulator.keyed import Draws
from simulator.population import Population
from simulator.products import APP_BASE, CLICK_TARGETS, WEB_BASE, Catalogue

MS = 1000
HOUR = 3600 * MS
DAY = 24 * HOUR
NEVER = np.iinfo(np.int64).max
EXTERNAL_REFERRERS = ("https://www.google.com/", "https://yandex.ru/", "https://vk.com/",
                      "https://t.me/", "")
PAYMENT_METHODS = ("card", "sbp", "cash_on_delivery", "apple_pay", "google_pay")
PAYMENT_ERRORS = ("Card declined: insufficient funds", "3-D Secure failed", "Bank timeout",
                  "Card expired")
NOTIFICATION_TYPES = ("promo", "recommendation", "price_drop", "back_in_stock", "cart_reminder")
STEP_PAGE, STEP_SEARCH, STEP_PRODUCT = 0, 1, 2

_ITEM = pl.Struct({"product_id": pl.String, "quantity": pl.Int64, "price": pl.Float64})
# Every column of the event frame, in output order: a chunk missing an event kind still
# serialises its fields in the same order, so the bytes do not depend on the chunking.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event": pl.String, "_ts": pl.Int64, "_ord": pl.Int32, "_person": pl.Int64,
    "_device": pl.Int64, "_session": pl.Int64, "_uid": pl.Boolean,
    "notification_type": pl.String, "campaign_id": pl.String, "search_query": pl.String,
    "page_url": pl.String, "referrer": pl.String, "product_id": pl.String,
    "product_name": pl.String, "category": pl.String, "price": pl.Float64,
    "scroll_depth": pl.Int64, "clicked_element": pl.String, "quantity": pl.Int64,
    "time_spent": pl.Float64, "total_price": pl.Float64, "cart_items": pl.List(_ITEM),
    "order_id": pl.String, "error_message": pl.String, "payment_amount": pl.Float64,
    "payment_method": pl.String, "order_items": pl.List(_ITEM), "shipping_address": pl.String,
    "email": pl.String, "phone": pl.String, "auth_status": pl.Int32, "latitude": pl.Float64,
    "longitude": pl.Float64,
    "recommended_products": pl.List(pl.Struct({"product_id": pl.String,
                                               "product_name": pl.String})),
    "purchase_date": pl.String, "visit_count": pl.Int64, "last_visit": pl.String,
    "client_id": pl.String, "device_type": pl.String, "timezone": pl.String,
    "push_token": pl.String, "user_id": pl.String,
}


@dataclass
class Sessions:
    person: np.ndarray
    device: np.ndarray
    start: np.ndarray  # ms since epoch, true time
    from_push: np.ndarray
    auth_from: np.ndarray  # events at or after this time carry user_id (int64 max: never)
    auth_until: np.ndarray

    def __len__(self) -> int:
        return len(self.person)


@dataclass(frozen=True)
class Campaigns:
    """Push campaigns of the whole period (global: every chunk sees the same ones)."""

    time: np.ndarray
    kind: np.ndarray
    push_device: np.ndarray  # devices that accept notifications, ascending
    holder: np.ndarray  # who holds each of those devices when a push arrives

    @property
    def ids(self) -> list[str]:
        return [f"campaign-{i + 1:03d}" for i in range(len(self.time))]


def plan_campaigns(cfg: SimConfig, rng: np.random.Generator, pop: Population,
                   t0: int) -> Campaigns:
    n_camp = max(1, rng.poisson(cfg.push_campaigns_per_week * cfg.days / 7))
    camp_t = t0 + rng.integers(0, cfg.days * DAY, n_camp)
    camp_type = rng.integers(0, len(NOTIFICATION_TYPES), n_camp)
    devices = np.flatnonzero(pop.devices["push_enabled"].to_numpy())
    # The holder of a device: its first user, or for a family device either of the two.
    usage = pop.usage.sort("device_idx", "person_idx")
    u_dev, u_person = usage["device_idx"].to_numpy(), usage["person_idx"].to_numpy()
    first = np.searchsorted(u_dev, devices)
    n_users = np.searchsorted(u_dev, devices, side="right") - first
    pick_user = Draws(cfg.seed, "holder", devices, by_owner=True).integers("user", 0, n_users)
    return Campaigns(camp_t, camp_type, devices, u_person[first + pick_user])


def _frame(data: dict) -> pl.DataFrame:
    """An event frame with its columns in their EVENT_SCHEMA types (an empty frame built
    with a broadcast scalar would otherwise have Null columns)."""
    df = pl.DataFrame(data)
    return df.cast({c: EVENT_SCHEMA[c] for c in df.columns if c in EVENT_SCHEMA})


def _circ_hour_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % 24
    return np.minimum(d, 24 - d)


def _taste_keys(tastes: np.ndarray) -> np.ndarray:
    n = tastes.shape[0]
    cum = np.cumsum(tastes, axis=1)
    cum[:, -1] = 1.0
    return (np.arange(n)[:, None] + cum).ravel()


class JourneyBuilder:
    """Builds the events of people [p0, p1) with `build`; keeps `registered_at` for all."""

    def __init__(self, cfg: SimConfig, pop: Population, cat: Catalogue,
                 campaigns: Campaigns) -> None:
        self.cfg, self.pop, self.cat, self.camp = cfg, pop, cat, campaigns
        self.seed = cfg.seed
        self.t0 = int(datetime(cfg.start.year, cfg.start.month, cfg.start.day,
                               tzinfo=UTC).timestamp() * MS)
        self.period = cfg.days * DAY
        people = pop.people
        self.n_cat = cat.n_categories
        self.offset_h = people["utc_offset_hours"].to_numpy()
        self.pref_hour = people["preferred_hour"].to_numpy()
        self.propensity = people["purchase_propensity"].to_numpy()
        self.push_resp = people["push_responsiveness"].to_numpy()
        self.registered = people["registered"].to_numpy()
        self.long_standing = people["long_standing"].to_numpy()
        self.with_history = people["with_history"].to_numpy()
        self.one_time = people["one_time"].to_numpy()
        self.activity = people["sessions_per_week"].to_numpy()
        self.account_age = people["account_age_days"].to_numpy()
        self.home_lat = people["home_lat"].to_numpy()
        self.home_lon = people["home_lon"].to_numpy()
        self.email, self.phone = people["email"], people["phone"]
        self.shipping = people["shipping_address"]
        self.user_id = people["user_id"]
        self.taste_keys = _taste_keys(pop.tastes)
        dev = pop.devices
        self.dev_kind = dev["kind_idx"].to_numpy()
        self.dev_kiosk = (dev["shared"] == "kiosk").to_numpy()
        self.dev_geo = dev["geo_enabled"].to_numpy()
        self.dev_client_id = dev["sent_client_id"]
        self.dev_type = dev["device_type"]
        self.dev_timezone = dev["timezone"]
        self.dev_token = dev["push_token"]
        self.usage_device = pop.usage["device_idx"].to_numpy()
        prods = cat.products
        self.pid, self.pname = prods["product_id"], prods["product_name"]
        self.price = prods["price"].to_numpy()
        self.query = self.pname.str.to_lowercase().str.extract(r"^(\S+(?: \S+)?)", 1)
        self.registered_at = np.full(people.height, NEVER, dtype=np.int64)
        self.frames: list[pl.DataFrame] = []

    def draws(self, stage: str, owner: np.ndarray, *, by_owner: bool = False) -> Draws:
        return Draws(self.seed, stage, owner, by_owner=by_owner)

    # ------------------------------------------------------------------ sampling helpers

    def categories_for(self, person: np.ndarray, u: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.taste_keys, person + u, side="right")
        return np.clip(k - person * self.n_cat, 0, self.n_cat - 1)

    def products_for(self, person: np.ndarray, d: Draws) -> np.ndarray:
        return self.cat.sample(d.random("product"), self.categories_for(person, d.random("cat")))

    def device_for(self, person: np.ndarray) -> np.ndarray:
        u = self.draws("device", person).random("u")
        row = np.searchsorted(self.pop.usage_keys, person + u, side="right")
        return self.usage_device[np.clip(row, 0, len(self.usage_device) - 1)]

    def local_start_times(self, person: np.ndarray) -> np.ndarray:
        """A time in the period whose local hour follows the person's daily rhythm."""
        d = self.draws("start", person)
        day = d.integers("day", 0, self.cfg.days)
        hour = np.where(
            d.random("rhythm") < 0.75,
            self.pref_hour[person] + d.normal("hour", 0, 1.5),
            d.uniform("any_hour", 7, 24),
        )
        t = day * DAY + ((hour - self.offset_h[person]) * HOUR).astype(np.int64)
        t += d.integers("jitter", 0, HOUR) // 60  # spread within a minute-scale jitter
        return self.t0 + np.mod(t, self.period)

    def phone_as_sent(self, person: np.ndarray) -> pl.Series:
        """The person's phone as their forms send it: +7 or a national 8 prefix (per person)."""
        own = self.phone.gather(person)
        intl = self.draws("phone_format", person, by_owner=True).random("intl") < 0.6
        return pl.select(pl.when(pl.Series(intl)).then(own)
                         .otherwise("8" + own.str.slice(2))).to_series()

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames.append(frame)

    # ------------------------------------------------------------------ sessions

    def organic_sessions(self, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rate = self.activity[people] * self.cfg.days / 7
        n_s = 1 + self.draws("organic", people, by_owner=True).poisson("n", rate)
        n_s[self.one_time[people]] = 1
        person = np.repeat(people, n_s)
        return person, self.local_start_times(person)

    def push_campaigns(self, p0: int, p1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """push_received / push_opened; returns (person, device, open time) of opened ones."""
        c = self.camp
        mine = (c.holder >= p0) & (c.holder < p1)
        devices, holder = c.push_device[mine], c.holder[mine]
        n_camp = len(c.time)
        camp = np.repeat(np.arange(n_camp), len(devices))
        dev = np.tile(devices, n_camp)
        person = np.tile(holder, n_camp)
        d = self.draws("push", person)
        reach = d.random("reach") < 0.6  # each campaign targets a segment
        t_recv_all = c.time[camp] + d.integers("recv", 1 * MS, 90 * MS)
        u_open = d.random("open")
        delay = np.minimum(d.exponential("delay", 8 * 60 * MS), 3 * HOUR).astype(np.int64)
        camp, dev, person = camp[reach], dev[reach], person[reach]
        t_recv = t_recv_all[reach]
        local_h = ((t_recv - self.t0) % DAY) / HOUR + self.offset_h[person]
        dist = _circ_hour_dist(local_h, self.pref_hour[person] + 0.5)
        p_open = self.push_resp[person] * np.exp(-(dist**2) / (2 * 2.0**2))
        opened = u_open[reach] < p_open
        t_open = t_recv + delay[reach]
        registered_by = self.registered_at[person]
        is_app = self.dev_kind[dev] > 0
        ntype = pick(NOTIFICATION_TYPES, c.kind[camp])
        camp_ids = c.ids
        base = {"_person": person, "_device": dev, "_session": np.full(len(camp), -1),
                "_uid": is_app & (t_recv >= registered_by)}
        self.add(_frame({"event": "push_received", "_ts": t_recv, "_ord": 0, **base,
                               "notification_type": ntype,
                               "campaign_id": pick(camp_ids, camp)}))
        o = opened
        self.add(_frame({
            "event": "push_opened", "_ts": t_open[o], "_ord": 0,
            "_person": person[o], "_device": dev[o], "_session": np.full(int(o.sum()), -1),
            "_uid": (is_app & (t_open >= registered_by))[o],
            "notification_type": ntype.filter(pl.Series(o)),
            "campaign_id": pick(camp_ids, camp[o]),
        }))
        return person[o], dev[o], t_open[o] + 2 * MS

    def registration(self, people: np.ndarray, s_person: np.ndarray,
                     s_start: np.ndarray) -> None:
        """Account creation time per person (int64 max when never), before push needs it."""
        reg = np.full(len(people), NEVER, dtype=np.int64)
        long = self.long_standing[people]
        reg[long] = self.t0 - (self.account_age[people][long] * DAY).astype(np.int64)
        # New registrants sign up in one of their organic sessions, chosen at random.
        new = self.registered[people] & ~long
        order = np.lexsort((s_start, s_person))
        sp, st = s_person[order], s_start[order]
        first = np.searchsorted(sp, people)
        count = np.searchsorted(sp, people, side="right") - first
        u = self.draws("registration", people, by_owner=True).random("session")
        pick_i = first + (u * np.maximum(count, 1)).astype(np.int64)
        ok = new & (count > 0)
        reg[ok] = st[pick_i[ok]]
        self.registered_at[people] = reg

    # ------------------------------------------------------------------ main build

    def build(self, p0: int, p1: int) -> tuple[pl.DataFrame, Sessions]:
        """Events (hidden `_session` local to the chunk) and sessions of people [p0, p1)."""
        cfg = self.cfg
        self.frames = []
        people = np.arange(p0, p1, dtype=np.int64)
        o_person, o_start = self.organic_sessions(people)
        self.registration(people, o_person, o_start)
        reg_at = self.registered_at
        p_person, p_device, p_start = self.push_campaigns(p0, p1)
        person = np.concatenate([o_person, p_person])
        device = np.concatenate([self.device_for(o_person), p_device])
        start = np.concatenate([o_start, p_start])
        from_push = np.r_[np.zeros(len(o_person), bool), np.ones(len(p_person), bool)]
        order = np.lexsort((start, person))  # stable: ties keep organic-then-push order
        person, device, start, from_push = person[order], device[order], start[order], \
            from_push[order]
        n_s = len(person)
        kind = self.dev_kind[device]
        kiosk = self.dev_kiosk[device]
        ds = self.draws("session", person)

        # --- authentication state per session
        is_reg_session = start == reg_at[person]
        registered_before = start >= reg_at[person]
        p_auth = np.where(kiosk, 0.25, np.where(kind > 0, 0.9, 0.55))
        auth_start = registered_before & ((ds.random("auth") < p_auth) | is_reg_session)
        p_explicit = np.where(kiosk, 1.0, np.where(kind > 0, 0.05, 0.2))
        login_start = auth_start & ((ds.random("explicit") < p_explicit) | is_reg_session)

        # --- browse steps
        n_steps = 1 + ds.poisson("steps", np.where(from_push, 2.0, 4.0))
        s_idx = np.repeat(np.arange(n_s), n_steps)
        first_step = np.r_[0, np.cumsum(n_steps)[:-1]]
        step_no = np.arange(len(s_idx)) - first_step[s_idx]
        n_t = len(s_idx)
        s_person = person[s_idx]
        dt = self.draws("step", s_person)
        step_kind = dt.choice("kind", 3, [0.35, 0.15, 0.5])
        step_kind[(step_no == 0) & from_push[s_idx]] = STEP_PRODUCT
        dwell = np.clip(dt.lognormal("dwell", np.log(35), 0.9), 3, 1800).astype(np.int64) * MS
        lead = np.where(login_start, 20 * MS, 0) + np.where(
            (kind > 0) & self.dev_geo[device], 2 * MS, 0)
        cum = np.cumsum(dwell + MS)
        step_start = start[s_idx] + lead[s_idx] + cum - (dwell + MS) - np.r_[0, cum][first_step][
            s_idx]
        browse_end = np.zeros(n_s, dtype=np.int64)
        np.maximum.at(browse_end, s_idx, step_start + dwell)
        step_cat = self.categories_for(s_person, dt.random("cat"))
        step_prod = self.cat.sample(dt.random("product"), step_cat)

        cats = list(self.cat.categories)
        pid, pname, price, query = self.pid, self.pname, self.price, self.query
        base = pl.Series([WEB_BASE, APP_BASE, APP_BASE]).gather(kind[s_idx])
        url = pl.select(
            pl.when(pl.Series(step_kind == STEP_PAGE))
            .then(pl.lit("/catalog/") + pick(cats, step_cat))
            .when(pl.Series(step_kind == STEP_SEARCH))
            .then(pl.lit("/search?q=") + query.gather(step_prod).str.replace_all(" ", "+"))
            .otherwise(pl.lit("/product/") + pid.gather(step_prod))
        ).to_series()
        url = base + url
        prev_url = url.shift(1)
        ext = pick(EXTERNAL_REFERRERS, dt.integers("referrer", 0, len(EXTERNAL_REFERRERS)))
        referrer = pl.select(
            pl.when(pl.Series(step_no > 0)).then(prev_url)
            .when(pl.Series(kind[s_idx] == 0)).then(ext)
        ).to_series()
        step_device = device[s_idx]

        def step_frame(mask: np.ndarray, event: str, t: np.ndarray, ordn: int, **cols):
            m = pl.Series(mask)
            data = {"event": event, "_ts": t[mask], "_ord": ordn, "_session": s_idx[mask],
                    "_person": s_person[mask], "_device": step_device[mask]}
            for k, v in cols.items():
                data[k] = v.filter(m) if isinstance(v, pl.Series) else v[mask]
            return _frame(data)

        all_steps = np.ones(n_t, dtype=bool)
        is_search = step_kind == STEP_SEARCH
        is_product = step_kind == STEP_PRODUCT
        self.add(step_frame(is_search, "search", step_start, 1,
                            search_query=query.gather(step_prod)))
        self.add(step_frame(all_steps, "page_view", step_start + MS * is_search, 2,
                            page_url=url, referrer=referrer))
        self.add(step_frame(is_product, "product_view", step_start + 1500, 3,
                            product_id=pid.gather(step_prod), product_name=pname.gather(step_prod),
                            category=pick(cats, step_cat), price=price[step_prod]))
        frac = [dt.random(f"frac{i}") for i in range(3)]
        scroll = dt.random("scroll") < 0.6
        depth = np.array([25, 50, 75, 100])[dt.choice("depth", 4)]
        self.add(step_frame(scroll, "scroll", step_start + (dwell * (0.2 + 0.5 * frac[0])).astype(
            np.int64), 4, page_url=url, scroll_depth=depth))
        click = dt.random("click") < 0.4
        self.add(step_frame(click, "click", step_start + (dwell * (0.3 + 0.5 * frac[1])).astype(
            np.int64), 5, page_url=url,
            clicked_element=pick(CLICK_TARGETS, dt.integers("element", 0, len(CLICK_TARGETS)))))
        adds = is_product & (dt.random("add") < self.propensity[s_person])
        qty = np.where(dt.random("single") < 0.85, 1, dt.integers("quantity", 2, 4))
        t_add = step_start + (dwell * 0.8).astype(np.int64)
        self.add(step_frame(adds, "add_to_cart", t_add, 6, product_id=pid.gather(step_prod),
                            product_name=pname.gather(step_prod), quantity=qty,
                            price=price[step_prod]))
        top = dt.random("time_on_page") < 0.7
        self.add(step_frame(top, "time_on_page", step_start + dwell, 7, page_url=url,
                            time_spent=np.round(dwell / MS + frac[2], 1)))
        removed = adds & (dt.random("remove") < cfg.remove_from_cart_rate)
        t_rm = t_add + ((browse_end[s_idx] - t_add) * frac[2]).astype(np.int64) + 500
        self.add(step_frame(removed, "remove_from_cart", t_rm, 8,
                            product_id=pid.gather(step_prod)))

        # --- checkout
        kept = adds & ~removed
        n_kept = np.bincount(s_idx[kept], minlength=n_s)
        checkout = (n_kept > 0) & (ds.random("checkout") < cfg.checkout_start_rate)
        complete = checkout & (ds.random("complete") < cfg.checkout_completion_rate)
        failed_first = complete & (ds.random("failed_first") < cfg.payment_failure_rate)
        failed_only = checkout & ~complete & (ds.random("failed_only") < 0.3)
        t_co = browse_end + 5 * MS
        # Signed-up shoppers not yet signed in log in to check out; others check out as guests.
        login_co = checkout & ~auth_start & registered_before & (ds.random("login_co") < 0.8)
        auth_from = np.where(auth_start, start, np.where(login_co, t_co - 3 * MS, NEVER))
        t_end = np.where(complete, t_co + 62 * MS, np.where(checkout, t_co + 30 * 60 * MS,
                                                            browse_end)) + 5 * MS
        logout = (auth_start | login_co) & (
            ds.random("logout") < np.where(kiosk, 0.9, np.where(kind == 0, 0.08, 0.01)))
        auth_until = np.where(logout, t_end, NEVER)

        items = (
            pl.DataFrame({"_session": s_idx[kept], "product_id": pid.gather(step_prod[kept]),
                          "quantity": qty[kept], "price": price[step_prod[kept]]})
            .group_by("_session", maintain_order=True)
            .agg(items=pl.struct("product_id", "quantity", "price"),
                 total=(pl.col("quantity") * pl.col("price")).sum().round(2))
        )
        items = pl.DataFrame({"_session": np.flatnonzero(checkout)}).join(
            items, on="_session", how="left", maintain_order="left")
        co_s = items["_session"].to_numpy()
        order_id = "ORD-" + hex_from_bits(ds.bits("order_id"), 5).str.to_uppercase()
        paym = pick(PAYMENT_METHODS, ds.choice("payment", len(PAYMENT_METHODS),
                                               [0.55, 0.25, 0.1, 0.05, 0.05]))
        err = pick(PAYMENT_ERRORS, ds.integers("error", 0, len(PAYMENT_ERRORS)))
        sess_person = person

        def sess_frame(sel: np.ndarray, event: str, t: np.ndarray, ordn: int, **cols):
            data = {"event": event, "_ts": t[sel], "_ord": ordn, "_session": sel,
                    "_person": sess_person[sel], "_device": device[sel]}
            for k, v in cols.items():
                data[k] = v.gather(sel) if isinstance(v, pl.Series) else v[sel]
            return _frame(data)

        totals = _by_session(items["total"].to_numpy(), co_s, n_s)
        self.add(sess_frame(co_s, "checkout_start", t_co, 10, total_price=totals)
                 .with_columns(cart_items=items["items"]))
        done = np.flatnonzero(complete)
        fail1 = np.flatnonzero(failed_first | failed_only)
        abandon = np.flatnonzero(checkout & ~complete)
        self.add(sess_frame(fail1, "payment_failure", t_co + 40 * MS, 11, order_id=order_id,
                            error_message=err))
        self.add(sess_frame(done, "payment_success", t_co + 60 * MS, 12, order_id=order_id,
                            payment_amount=totals, payment_method=paym))
        items_by_s = items.select("_session", "items")
        oc = sess_frame(done, "order_complete", t_co + 62 * MS, 13, order_id=order_id,
                        total_price=totals, payment_method=paym)
        oc = oc.join(items_by_s.rename({"items": "order_items"}), on="_session", how="left",
                     maintain_order="left")
        pers = oc["_person"].to_numpy()
        r_email, r_phone = ds.random("order_email")[done], ds.random("order_phone")[done]
        oc = oc.with_columns(
            shipping_address=self.shipping.gather(pers),
            email=pl.when(pl.Series(r_email < 0.9)).then(self.email.gather(pers)),
            phone=pl.when(pl.Series(r_phone < 0.7)).then(self.phone_as_sent(pers)),
        )
        self.add(oc)
        ab = sess_frame(abandon, "checkout_abandonment", t_co + 30 * 60 * MS, 14)
        self.add(ab.join(items_by_s.rename({"items": "cart_items"}), on="_session", how="left",
                         maintain_order="left"))

        # --- login / logout / geo
        lg_s = np.flatnonzero(login_start | login_co)
        t_login = np.where(login_start, start + 1 * MS, t_co - 3 * MS)
        lp = sess_person[lg_s]
        r_email, r_phone = ds.random("login_email")[lg_s], ds.random("login_phone")[lg_s]
        reg_now = is_reg_session[lg_s]
        self.add(sess_frame(lg_s, "user_login", t_login, 0).with_columns(
            auth_status=pl.lit(1),
            email=pl.when(pl.Series(reg_now | (r_email < 0.5))).then(self.email.gather(lp)),
            phone=pl.when(pl.Series(reg_now | (r_phone < 0.15))).then(self.phone_as_sent(lp)),
        ))
        lo_s = np.flatnonzero(logout)
        self.add(sess_frame(lo_s, "user_logout", t_end, 20))
        geo_s = np.flatnonzero((kind > 0) & self.dev_geo[device])
        gp = sess_person[geo_s]
        lat_noise, lon_noise = ds.normal("lat", 0, 0.05)[geo_s], ds.normal("lon", 0, 0.08)[geo_s]
        self.add(sess_frame(geo_s, "geo_location", start + 500, -1).with_columns(
            latitude=(self.home_lat[gp] + lat_noise).round(5),
            longitude=(self.home_lon[gp] + lon_noise).round(5),
        ))
        sessions = Sessions(person, device, start, from_push, auth_from, auth_until)
        self.server_events(people)
        return self.assemble(sessions), sessions

    # ------------------------------------------------------------------ back-office events

    def server_events(self, people: np.ndarray) -> None:
        cfg = self.cfg
        pid, pname, price = self.pid, self.pname, self.price
        reg = self.registered_at
        dp = self.draws("back_office", people, by_owner=True)
        # Recommendations the CRM generated (server side: user_id only).
        n_rec = np.where(self.registered[people],
                         dp.poisson("recommendations", cfg.recommendations_per_week * cfg.days
                                    / 7), 0)
        rp = np.repeat(people, n_rec)
        t_rec = self.t0 + self.draws("recommendation", rp).integers("t", 0, self.period)
        ok = t_rec >= reg[rp]
        rp, t_rec = rp[ok], t_rec[ok]
        k = 4
        rec_person = np.repeat(rp, k)
        rec_prod = self.products_for(rec_person, self.draws("recommended", rec_person))
        rec = pl.DataFrame({"_r": np.repeat(np.arange(len(rp)), k),
                            "product_id": pid.gather(rec_prod),
                            "product_name": pname.gather(rec_prod)}).group_by(
            "_r", maintain_order=True).agg(recommended_products=pl.struct("product_id",
                                                                          "product_name"))
        self.add(_frame({"event": "user_recommendation", "_ts": t_rec, "_ord": 0,
                               "_person": rp, "_device": -1, "_session": -1, "_uid": True,
                               "recommended_products": rec["recommended_products"]}))

        # History imported from the shop's old system for long-standing customers.
        hist = people[self.with_history[people]]
        t_imp = self.t0 + 2 * HOUR
        dh = self.draws("history", hist, by_owner=True)
        n_ord = 1 + dh.poisson("orders", 2)
        op = np.repeat(hist, n_ord)
        do = self.draws("history_order", op)
        n_lines = 1 + do.poisson("lines", 0.7)
        lo = np.repeat(np.arange(len(op)), n_lines)
        dl = self.draws("history_line", op[lo])
        lprod = self.products_for(op[lo], dl)
        lq = np.where(dl.random("quantity") < 0.85, 1, 2)
        lines = pl.DataFrame({"_o": lo, "product_id": pid.gather(lprod), "quantity": lq,
                              "price": price[lprod]}).group_by("_o", maintain_order=True).agg(
            order_items=pl.struct("product_id", "quantity", "price"),
            total_price=(pl.col("quantity") * pl.col("price")).sum().round(2))
        age = (self.account_age[op] * do.random("age") * DAY).astype(np.int64)
        pdate = pl.Series((self.t0 - age - DAY).astype("datetime64[ms]")).dt.strftime("%Y-%m-%d")
        self.add(_frame({
            "event": "purchase_history", "_ts": np.full(len(op), t_imp), "_ord": 0,
            "_person": op, "_device": -1, "_session": -1, "_uid": True,
            "order_id": "H-" + hex_from_bits(do.bits("order_id"), 5).str.to_uppercase(),
            "order_items": lines["order_items"], "total_price": lines["total_price"],
            "purchase_date": pdate,
        }))
        n_pages = 1 + dh.poisson("pages", 2)
        vp = np.repeat(hist, n_pages)
        dv = self.draws("history_page", vp)
        vcat = self.categories_for(vp, dv.random("cat"))
        last = self.t0 - dv.integers("last", HOUR, 60 * DAY)
        self.add(_frame({
            "event": "visit_history", "_ts": np.full(len(vp), t_imp + MS), "_ord": 1,
            "_person": vp, "_device": -1, "_session": -1, "_uid": True,
            "page_url": WEB_BASE + "/catalog/" + pick(list(self.cat.categories), vcat),
            "visit_count": 1 + dv.poisson("count", 6),
            "last_visit": pl.Series(last.astype("datetime64[ms]")).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
        }))

    # ------------------------------------------------------------------ assembly

    def assemble(self, s: Sessions) -> pl.DataFrame:
        """One frame in EVENT_SCHEMA, grouped by person (stable: per-person order is fixed)."""
        ev = pl.concat(self.frames, how="diagonal_relaxed")
        ev = ev.select(
            (pl.col(c) if c in ev.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in EVENT_SCHEMA.items()
        )
        ev = ev.sort("_person", maintain_order=True)
        ts = ev["_ts"].to_numpy()
        sess = ev["_session"].to_numpy()
        in_s = sess >= 0
        sc = np.where(in_s, sess, 0)
        authed = in_s & (ts >= s.auth_from[sc]) & (ts <= s.auth_until[sc])
        uid_flag = ev["_uid"].fill_null(False).to_numpy() | authed
        dev = ev["_device"].to_numpy()
        has_dev = pl.Series(dev >= 0)
        dc = np.where(dev >= 0, dev, 0)
        person = ev["_person"].to_numpy()
        return ev.with_columns(
            _uid=pl.Series(uid_flag),
            client_id=pl.when(has_dev).then(self.dev_client_id.gather(dc)),
            device_type=pl.when(has_dev).then(self.dev_type.gather(dc)),
            timezone=pl.when(has_dev).then(self.dev_timezone.gather(dc)),
            push_token=pl.when(has_dev).then(self.dev_token.gather(dc)),
            user_id=pl.when(pl.Series(uid_flag)).then(self.user_id.gather(person)),
        )


def _by_session(values: np.ndarray, sessions: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=values.dtype)
    out[sessions] = values
    return out
