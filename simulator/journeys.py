"""Sessions and the events they produce, built column-wise: no Python loop per event.

Each kind of event is one polars frame built from numpy index arrays; the frames are then
concatenated (diagonally: missing fields are null) into one stream in true-time order.
Hidden columns start with `_` and never reach the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.ids import hex_tokens, pick
from simulator.population import Population
from simulator.products import APP_BASE, CLICK_TARGETS, WEB_BASE, Catalogue

MS = 1000
HOUR = 3600 * MS
DAY = 24 * HOUR
EXTERNAL_REFERRERS = ("https://www.google.com/", "https://yandex.ru/", "https://vk.com/",
                      "https://t.me/", "")
PAYMENT_METHODS = ("card", "sbp", "cash_on_delivery", "apple_pay", "google_pay")
PAYMENT_ERRORS = ("Card declined: insufficient funds", "3-D Secure failed", "Bank timeout",
                  "Card expired")
NOTIFICATION_TYPES = ("promo", "recommendation", "price_drop", "back_in_stock", "cart_reminder")
STEP_PAGE, STEP_SEARCH, STEP_PRODUCT = 0, 1, 2


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


def _circ_hour_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % 24
    return np.minimum(d, 24 - d)


def _taste_keys(tastes: np.ndarray) -> np.ndarray:
    n = tastes.shape[0]
    cum = np.cumsum(tastes, axis=1)
    cum[:, -1] = 1.0
    return (np.arange(n)[:, None] + cum).ravel()


class JourneyBuilder:
    def __init__(self, cfg: SimConfig, rng: np.random.Generator, pop: Population,
                 cat: Catalogue) -> None:
        self.cfg, self.rng, self.pop, self.cat = cfg, rng, pop, cat
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
        self.taste_keys = _taste_keys(pop.tastes)
        dev = pop.devices
        self.dev_kind = dev["kind_idx"].to_numpy()
        self.dev_kiosk = (dev["shared"] == "kiosk").to_numpy()
        self.dev_push = dev["push_enabled"].to_numpy()
        self.dev_geo = dev["geo_enabled"].to_numpy()
        self.frames: list[pl.DataFrame] = []

    # ------------------------------------------------------------------ sampling helpers

    def categories_for(self, person: np.ndarray) -> np.ndarray:
        u = self.rng.random(len(person))
        k = np.searchsorted(self.taste_keys, person + u, side="right")
        return np.clip(k - person * self.n_cat, 0, self.n_cat - 1)

    def products_for(self, person: np.ndarray) -> np.ndarray:
        return self.cat.sample(self.rng, self.categories_for(person))

    def device_for(self, person: np.ndarray) -> np.ndarray:
        u = self.rng.random(len(person))
        row = np.searchsorted(self.pop.usage_keys, person + u, side="right")
        return self.pop.usage["device_idx"].to_numpy()[np.clip(row, 0, len(self.pop.usage) - 1)]

    def local_start_times(self, person: np.ndarray) -> np.ndarray:
        """A time in the period whose local hour follows the person's daily rhythm."""
        rng, n = self.rng, len(person)
        day = rng.integers(0, self.cfg.days, n)
        hour = np.where(
            rng.random(n) < 0.75,
            self.pref_hour[person] + rng.normal(0, 1.5, n),
            rng.uniform(7, 24, n),
        )
        t = day * DAY + ((hour - self.offset_h[person]) * HOUR).astype(np.int64)
        t += rng.integers(0, HOUR, n) // 60  # spread within a minute-scale jitter
        return self.t0 + np.mod(t, self.period)

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames.append(frame)

    # ------------------------------------------------------------------ sessions

    def organic_sessions(self) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng, people = self.cfg, self.rng, self.pop.people
        rate = people["sessions_per_week"].to_numpy() * cfg.days / 7
        n_s = 1 + rng.poisson(rate)
        n_s[people["one_time"].to_numpy()] = 1
        person = np.repeat(np.arange(len(n_s)), n_s)
        return person, self.local_start_times(person)

    def push_campaigns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """push_received / push_opened; returns (person, device, open time) of opened ones."""
        cfg, rng = self.cfg, self.rng
        n_camp = max(1, rng.poisson(cfg.push_campaigns_per_week * cfg.days / 7))
        camp_t = self.t0 + rng.integers(0, self.period, n_camp)
        camp_type = rng.integers(0, len(NOTIFICATION_TYPES), n_camp)
        devices = np.flatnonzero(self.dev_push)
        # Who holds the device when a push arrives: its first user (for a family device, either).
        usage = self.pop.usage.sort("device_idx", "person_idx")
        u_dev, u_person = usage["device_idx"].to_numpy(), usage["person_idx"].to_numpy()
        first = np.searchsorted(u_dev, devices)
        n_users = np.searchsorted(u_dev, devices, side="right") - first
        holder = u_person[first + rng.integers(0, 1 << 30, len(devices)) % n_users]
        camp = np.repeat(np.arange(n_camp), len(devices))
        dev = np.tile(devices, n_camp)
        person = np.tile(holder, n_camp)
        reach = rng.random(len(camp)) < 0.6  # each campaign targets a segment
        camp, dev, person = camp[reach], dev[reach], person[reach]
        t_recv = camp_t[camp] + rng.integers(1 * MS, 90 * MS, len(camp))
        local_h = ((t_recv - self.t0) % DAY) / HOUR + self.offset_h[person]
        dist = _circ_hour_dist(local_h, self.pref_hour[person] + 0.5)
        p_open = self.push_resp[person] * np.exp(-(dist**2) / (2 * 2.0**2))
        opened = rng.random(len(camp)) < p_open
        t_open = t_recv + np.minimum(rng.exponential(8 * 60 * MS, len(camp)), 3 * HOUR).astype(
            np.int64
        )
        registered_by = self.registered_at[person]
        is_app = self.dev_kind[dev] > 0
        ntype = pick(NOTIFICATION_TYPES, camp_type[camp])
        camp_ids = [f"campaign-{i + 1:03d}" for i in range(n_camp)]
        base = {"_person": person, "_device": dev, "_session": np.full(len(camp), -1),
                "_uid": is_app & (t_recv >= registered_by)}
        self.add(pl.DataFrame({"event": "push_received", "_ts": t_recv, "_ord": 0, **base,
                               "notification_type": ntype,
                               "campaign_id": pick(camp_ids, camp)}))
        o = opened
        self.add(pl.DataFrame({
            "event": "push_opened", "_ts": t_open[o], "_ord": 0,
            "_person": person[o], "_device": dev[o], "_session": np.full(int(o.sum()), -1),
            "_uid": (is_app & (t_open >= registered_by))[o],
            "notification_type": ntype.filter(pl.Series(o)),
            "campaign_id": pick(camp_ids, camp[o]),
        }))
        return person[o], dev[o], t_open[o] + 2 * MS

    def registration(self, s_person: np.ndarray, s_start: np.ndarray) -> np.ndarray:
        """Account creation time per person (int64 max when never), before push needs it."""
        rng, people = self.rng, self.pop.people
        n = people.height
        never = np.iinfo(np.int64).max
        reg = np.full(n, never, dtype=np.int64)
        long = people["long_standing"].to_numpy()
        age = people["account_age_days"].to_numpy()
        reg[long] = self.t0 - (age[long] * DAY).astype(np.int64)
        # New registrants sign up in one of their organic sessions, chosen at random.
        new = self.registered & ~long
        order = np.lexsort((s_start, s_person))
        sp, st = s_person[order], s_start[order]
        first = np.searchsorted(sp, np.arange(n))
        count = np.searchsorted(sp, np.arange(n), side="right") - first
        pick_i = first + (rng.random(n) * np.maximum(count, 1)).astype(np.int64)
        ok = new & (count > 0)
        reg[ok] = st[pick_i[ok]]
        self.registered_at = reg
        return reg

    # ------------------------------------------------------------------ main build

    def build(self) -> tuple[pl.DataFrame, Sessions]:
        cfg, rng = self.cfg, self.rng
        o_person, o_start = self.organic_sessions()
        reg_at = self.registration(o_person, o_start)
        p_person, p_device, p_start = self.push_campaigns()
        person = np.concatenate([o_person, p_person])
        device = np.concatenate([self.device_for(o_person), p_device])
        start = np.concatenate([o_start, p_start])
        from_push = np.r_[np.zeros(len(o_person), bool), np.ones(len(p_person), bool)]
        order = np.lexsort((start, person))
        person, device, start, from_push = person[order], device[order], start[order], \
            from_push[order]
        n_s = len(person)
        kind = self.dev_kind[device]
        kiosk = self.dev_kiosk[device]

        # --- authentication state per session
        is_reg_session = start == reg_at[person]
        registered_before = start >= reg_at[person]
        p_auth = np.where(kiosk, 0.25, np.where(kind > 0, 0.9, 0.55))
        auth_start = registered_before & ((rng.random(n_s) < p_auth) | is_reg_session)
        p_explicit = np.where(kiosk, 1.0, np.where(kind > 0, 0.05, 0.2))
        login_start = auth_start & ((rng.random(n_s) < p_explicit) | is_reg_session)

        # --- browse steps
        n_steps = 1 + np.where(from_push, rng.poisson(2, n_s), rng.poisson(4, n_s))
        s_idx = np.repeat(np.arange(n_s), n_steps)
        first_step = np.r_[0, np.cumsum(n_steps)[:-1]]
        step_no = np.arange(len(s_idx)) - first_step[s_idx]
        n_t = len(s_idx)
        step_kind = rng.choice(3, size=n_t, p=[0.35, 0.15, 0.5])
        step_kind[(step_no == 0) & from_push[s_idx]] = STEP_PRODUCT
        dwell = np.clip(rng.lognormal(np.log(35), 0.9, n_t), 3, 1800).astype(np.int64) * MS
        lead = np.where(login_start, 20 * MS, 0) + np.where(
            (kind > 0) & self.dev_geo[device], 2 * MS, 0)
        cum = np.cumsum(dwell + MS)
        step_start = start[s_idx] + lead[s_idx] + cum - (dwell + MS) - np.r_[0, cum][first_step][
            s_idx]
        browse_end = np.zeros(n_s, dtype=np.int64)
        np.maximum.at(browse_end, s_idx, step_start + dwell)
        s_person = person[s_idx]
        step_cat = self.categories_for(s_person)
        step_prod = self.cat.sample(rng, step_cat)

        prods = self.cat.products
        cats = list(self.cat.categories)
        pid = prods["product_id"]
        pname = prods["product_name"]
        price = prods["price"].to_numpy()
        query = pname.str.to_lowercase().str.extract(r"^(\S+(?: \S+)?)", 1)
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
        ext = pick(EXTERNAL_REFERRERS, rng.integers(0, len(EXTERNAL_REFERRERS), n_t))
        referrer = pl.select(
            pl.when(pl.Series(step_no > 0)).then(prev_url)
            .when(pl.Series(kind[s_idx] == 0)).then(ext)
        ).to_series()

        def step_frame(mask: np.ndarray, event: str, t: np.ndarray, ordn: int, **cols):
            m = pl.Series(mask)
            data = {"event": event, "_ts": t[mask], "_ord": ordn, "_session": s_idx[mask],
                    "_person": s_person[mask], "_device": device[s_idx][mask]}
            for k, v in cols.items():
                data[k] = v.filter(m) if isinstance(v, pl.Series) else v[mask]
            return pl.DataFrame(data)

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
        frac = rng.random((3, n_t))
        scroll = rng.random(n_t) < 0.6
        self.add(step_frame(scroll, "scroll", step_start + (dwell * (0.2 + 0.5 * frac[0])).astype(
            np.int64), 4, page_url=url, scroll_depth=rng.choice([25, 50, 75, 100], n_t)))
        click = rng.random(n_t) < 0.4
        self.add(step_frame(click, "click", step_start + (dwell * (0.3 + 0.5 * frac[1])).astype(
            np.int64), 5, page_url=url,
            clicked_element=pick(CLICK_TARGETS, rng.integers(0, len(CLICK_TARGETS), n_t))))
        adds = is_product & (rng.random(n_t) < self.propensity[s_person])
        qty = np.where(rng.random(n_t) < 0.85, 1, rng.integers(2, 4, n_t))
        t_add = step_start + (dwell * 0.8).astype(np.int64)
        self.add(step_frame(adds, "add_to_cart", t_add, 6, product_id=pid.gather(step_prod),
                            product_name=pname.gather(step_prod), quantity=qty,
                            price=price[step_prod]))
        top = rng.random(n_t) < 0.7
        self.add(step_frame(top, "time_on_page", step_start + dwell, 7, page_url=url,
                            time_spent=np.round(dwell / MS + frac[2], 1)))
        removed = adds & (rng.random(n_t) < cfg.remove_from_cart_rate)
        t_rm = t_add + ((browse_end[s_idx] - t_add) * frac[2]).astype(np.int64) + 500
        self.add(step_frame(removed, "remove_from_cart", t_rm, 8,
                            product_id=pid.gather(step_prod)))

        # --- checkout
        kept = adds & ~removed
        n_kept = np.bincount(s_idx[kept], minlength=n_s)
        checkout = (n_kept > 0) & (rng.random(n_s) < cfg.checkout_start_rate)
        complete = checkout & (rng.random(n_s) < cfg.checkout_completion_rate)
        failed_first = complete & (rng.random(n_s) < cfg.payment_failure_rate)
        failed_only = checkout & ~complete & (rng.random(n_s) < 0.3)
        t_co = browse_end + 5 * MS
        # Signed-up shoppers not yet signed in log in to check out; others check out as guests.
        login_co = checkout & ~auth_start & registered_before & (rng.random(n_s) < 0.8)
        never = np.iinfo(np.int64).max
        auth_from = np.where(auth_start, start, np.where(login_co, t_co - 3 * MS, never))
        t_end = np.where(complete, t_co + 62 * MS, np.where(checkout, t_co + 30 * 60 * MS,
                                                            browse_end)) + 5 * MS
        logout = (auth_start | login_co) & (
            rng.random(n_s) < np.where(kiosk, 0.9, np.where(kind == 0, 0.08, 0.01)))
        auth_until = np.where(logout, t_end, never)

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
        order_id = "ORD-" + hex_tokens(rng, n_s, 5).str.to_uppercase()
        paym = pick(PAYMENT_METHODS, rng.choice(len(PAYMENT_METHODS), n_s,
                                                p=[0.55, 0.25, 0.1, 0.05, 0.05]))
        err = pick(PAYMENT_ERRORS, rng.integers(0, len(PAYMENT_ERRORS), n_s))
        sess_person = person

        def sess_frame(sel: np.ndarray, event: str, t: np.ndarray, ordn: int, **cols):
            data = {"event": event, "_ts": t[sel], "_ord": ordn, "_session": sel,
                    "_person": sess_person[sel], "_device": device[sel]}
            for k, v in cols.items():
                data[k] = v.gather(sel) if isinstance(v, pl.Series) else v[sel]
            return pl.DataFrame(data)

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
        people = self.pop.people
        email_p, phone_p = people["email"], people["phone"]
        national = "8" + phone_p.str.slice(2)
        phone_sent = pl.select(pl.when(pl.Series(rng.random(people.height) < 0.6))
                               .then(phone_p).otherwise(national)).to_series()
        items_by_s = items.select("_session", "items")
        oc = sess_frame(done, "order_complete", t_co + 62 * MS, 13, order_id=order_id,
                        total_price=totals, payment_method=paym)
        oc = oc.join(items_by_s.rename({"items": "order_items"}), on="_session", how="left",
                     maintain_order="left")
        pers = oc["_person"].to_numpy()
        r = rng.random((2, len(pers)))
        oc = oc.with_columns(
            shipping_address=people["shipping_address"].gather(pers),
            email=pl.when(pl.Series(r[0] < 0.9)).then(email_p.gather(pers)),
            phone=pl.when(pl.Series(r[1] < 0.7)).then(phone_sent.gather(pers)),
        )
        self.add(oc)
        ab = sess_frame(abandon, "checkout_abandonment", t_co + 30 * 60 * MS, 14)
        self.add(ab.join(items_by_s.rename({"items": "cart_items"}), on="_session", how="left",
                         maintain_order="left"))

        # --- login / logout / geo
        lg_s = np.flatnonzero(login_start | login_co)
        t_login = np.where(login_start, start + 1 * MS, t_co - 3 * MS)
        lp = sess_person[lg_s]
        r = rng.random((2, len(lg_s)))
        reg_now = is_reg_session[lg_s]
        self.add(sess_frame(lg_s, "user_login", t_login, 0).with_columns(
            auth_status=pl.lit(1),
            email=pl.when(pl.Series(reg_now | (r[0] < 0.5))).then(email_p.gather(lp)),
            phone=pl.when(pl.Series(reg_now | (r[1] < 0.15))).then(phone_sent.gather(lp)),
        ))
        lo_s = np.flatnonzero(logout)
        self.add(sess_frame(lo_s, "user_logout", t_end, 20))
        geo_s = np.flatnonzero((kind > 0) & self.dev_geo[device])
        gp = sess_person[geo_s]
        self.add(sess_frame(geo_s, "geo_location", start + 500, -1).with_columns(
            latitude=(people["home_lat"].to_numpy()[gp] + rng.normal(0, 0.05, len(gp))).round(5),
            longitude=(people["home_lon"].to_numpy()[gp] + rng.normal(0, 0.08, len(gp))).round(5),
        ))
        sessions = Sessions(person, device, start, from_push, auth_from, auth_until)
        self.server_events()
        return self.assemble(sessions), sessions

    # ------------------------------------------------------------------ back-office events

    def server_events(self) -> None:
        cfg, rng, people = self.cfg, self.rng, self.pop.people
        n = people.height
        prods = self.cat.products
        pid, pname, price = prods["product_id"], prods["product_name"], prods["price"].to_numpy()
        reg = self.registered_at
        # Recommendations the CRM generated (server side: user_id only).
        n_rec = np.where(self.registered, rng.poisson(cfg.recommendations_per_week * cfg.days / 7,
                                                      n), 0)
        rp = np.repeat(np.arange(n), n_rec)
        t_rec = self.t0 + rng.integers(0, self.period, len(rp))
        ok = t_rec >= reg[rp]
        rp, t_rec = rp[ok], t_rec[ok]
        k = 4
        rec_prod = self.products_for(np.repeat(rp, k))
        rec = pl.DataFrame({"_r": np.repeat(np.arange(len(rp)), k),
                            "product_id": pid.gather(rec_prod),
                            "product_name": pname.gather(rec_prod)}).group_by(
            "_r", maintain_order=True).agg(recommended_products=pl.struct("product_id",
                                                                          "product_name"))
        self.add(pl.DataFrame({"event": "user_recommendation", "_ts": t_rec, "_ord": 0,
                               "_person": rp, "_device": -1, "_session": -1, "_uid": True,
                               "recommended_products": rec["recommended_products"]}))

        # History imported from the shop's old system for long-standing customers.
        hist = np.flatnonzero(people["with_history"].to_numpy())
        t_imp = self.t0 + 2 * HOUR
        n_ord = 1 + rng.poisson(2, len(hist))
        op = np.repeat(hist, n_ord)
        n_lines = 1 + rng.poisson(0.7, len(op))
        lo = np.repeat(np.arange(len(op)), n_lines)
        lprod = self.products_for(op[lo])
        lq = np.where(rng.random(len(lo)) < 0.85, 1, 2)
        lines = pl.DataFrame({"_o": lo, "product_id": pid.gather(lprod), "quantity": lq,
                              "price": price[lprod]}).group_by("_o", maintain_order=True).agg(
            order_items=pl.struct("product_id", "quantity", "price"),
            total_price=(pl.col("quantity") * pl.col("price")).sum().round(2))
        age = (people["account_age_days"].to_numpy()[op] * rng.random(len(op)) * DAY).astype(
            np.int64)
        pdate = pl.Series((self.t0 - age - DAY).astype("datetime64[ms]")).dt.strftime("%Y-%m-%d")
        self.add(pl.DataFrame({
            "event": "purchase_history", "_ts": np.full(len(op), t_imp), "_ord": 0,
            "_person": op, "_device": -1, "_session": -1, "_uid": True,
            "order_id": "H-" + hex_tokens(rng, len(op), 5).str.to_uppercase(),
            "order_items": lines["order_items"], "total_price": lines["total_price"],
            "purchase_date": pdate,
        }))
        n_pages = 1 + rng.poisson(2, len(hist))
        vp = np.repeat(hist, n_pages)
        vcat = self.categories_for(vp)
        last = self.t0 - rng.integers(HOUR, 60 * DAY, len(vp))
        self.add(pl.DataFrame({
            "event": "visit_history", "_ts": np.full(len(vp), t_imp + MS), "_ord": 1,
            "_person": vp, "_device": -1, "_session": -1, "_uid": True,
            "page_url": WEB_BASE + "/catalog/" + pick(list(self.cat.categories), vcat),
            "visit_count": 1 + rng.poisson(6, len(vp)),
            "last_visit": pl.Series(last.astype("datetime64[ms]")).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
        }))

    # ------------------------------------------------------------------ assembly

    def assemble(self, s: Sessions) -> pl.DataFrame:
        ev = pl.concat(self.frames, how="diagonal_relaxed")
        ts = ev["_ts"].to_numpy()
        sess = ev["_session"].to_numpy()
        in_s = sess >= 0
        sc = np.where(in_s, sess, 0)
        authed = in_s & (ts >= s.auth_from[sc]) & (ts <= s.auth_until[sc])
        uid_flag = ev["_uid"].fill_null(False).to_numpy() | authed
        dev = ev["_device"].to_numpy()
        has_dev = dev >= 0
        dc = np.where(has_dev, dev, 0)
        devices, people = self.pop.devices, self.pop.people
        person = ev["_person"].to_numpy()
        return (
            ev.with_columns(
                _uid=pl.Series(uid_flag),
                client_id=pl.when(pl.Series(has_dev)).then(devices["sent_client_id"].gather(dc)),
                device_type=pl.when(pl.Series(has_dev)).then(devices["device_type"].gather(dc)),
                timezone=pl.when(pl.Series(has_dev)).then(devices["timezone"].gather(dc)),
                push_token=pl.when(pl.Series(has_dev)).then(devices["push_token"].gather(dc)),
                _user=people["user_id"].gather(person),
            )
            .with_columns(user_id=pl.when("_uid").then("_user"))
            .drop("_user")
        )


def _by_session(values: np.ndarray, sessions: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=values.dtype)
    out[sessions] = values
    return out
