"""The lifecycle model (ml/lifecycle.py): the published CDNOW fits, the BG/NBD properties, an
independent check of the expected-purchases formula, edge cases and the scoring frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy.integrate import quad
from scipy.special import betaln
from scipy.stats import beta as beta_dist

from bench.clv_cdnow import CALIBRATION_END, HOLDOUT_END, load_cdnow
from ml import lifecycle as lc
from tests.conftest import SHARED_DATA
from tests.requirements import require

CDNOW_SAMPLE = SHARED_DATA / "cdnow_sample.txt"
# Fader, Hardie & Lee (2005) on the CDNOW sample (weeks).
PUBLISHED = lc.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426, loglik=-9582.4,
                           customers=2357, converged=True)


@pytest.fixture(scope="module")
def cdnow() -> pl.DataFrame:
    require("cdnow_sample", CDNOW_SAMPLE.exists(),
            f"the CDNOW 1/10 sample at {CDNOW_SAMPLE} (see ../shared/data/README.md)")
    return load_cdnow(CDNOW_SAMPLE)[0]


def summary(rows: list[tuple[int, float, float]], monetary: list[float] | None = None
            ) -> pl.DataFrame:
    """An rfm_summary frame from (frequency, recency, T) rows."""
    return pl.DataFrame({
        "person_id": list(range(len(rows))),
        "frequency": [r[0] for r in rows],
        "recency": [float(r[1]) for r in rows],
        "T": [float(r[2]) for r in rows],
        "monetary": monetary or [0.0] * len(rows),
    }, schema_overrides={"frequency": pl.Int64})


def orders(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame({
        "person_id": [r[0] for r in rows],
        "ordered_at": [datetime.fromisoformat(r[1]) for r in rows],
        "amount": [r[2] for r in rows],
    })


def simulated_orders(customers: int, seed: int = 7) -> pl.DataFrame:
    """Orders of BG/NBD buyers (the published parameters, in days) over 2024: a few of them
    buy on one day only, some several times a day."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1)
    rows: list[tuple[int, datetime, float]] = []
    for person in range(customers):
        lam = rng.gamma(PUBLISHED.r, 1 / PUBLISHED.alpha) / 7  # per day
        p = rng.beta(PUBLISHED.a, PUBLISHED.b)
        t = float(rng.uniform(0, 90))
        spend = rng.gamma(6.0, 5.0)
        while t < 366:
            rows.append((person, start + timedelta(days=t), round(rng.gamma(4.0, spend / 4), 2)))
            t += rng.exponential(1 / lam)
            if len(rows) > 1 and rows[-2][0] == person and rng.uniform() < p:
                break
    return pl.DataFrame(rows, schema={"person_id": pl.Int64, "ordered_at": pl.Datetime("us"),
                                      "amount": pl.Float64}, orient="row")


# --- published figures --------------------------------------------------------------------


def test_cdnow_sample_reproduces_the_published_parameters(cdnow: pl.DataFrame) -> None:
    s = lc.rfm_summary(cdnow, end=CALIBRATION_END, period_days=7)
    assert s.height == 2357 and int((s["frequency"] > 0).sum()) == 946
    bg = lc.fit_bgnbd(s)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(PUBLISHED, name), rel=0.01), name
    assert bg.loglik == pytest.approx(PUBLISHED.loglik, abs=0.1)
    gg = lc.fit_gamma_gamma(s)  # "RFM and CLV" (2005): p = 6.25, q = 3.74, v = 15.44
    assert (gg.p, gg.q, gg.v) == pytest.approx((6.25, 3.74, 15.44), rel=0.01)
    assert gg.customers == 946


def test_cdnow_holdout_model_beats_the_baseline(cdnow: pl.DataFrame) -> None:
    ev = lc.evaluate(cdnow, CALIBRATION_END, HOLDOUT_END, period_days=7)
    holdout = cdnow.filter((pl.col("ordered_at") > CALIBRATION_END)
                           & (pl.col("ordered_at") <= HOLDOUT_END))
    assert ev.actual_total == holdout.unique(["person_id", "ordered_at"]).height
    assert ev.holdout_periods == pytest.approx(39.0)
    assert ev.predicted_total == pytest.approx(ev.actual_total, rel=0.15)
    assert ev.mae_model < ev.mae_baseline
    assert ev.per_customer["predicted"].sum() == pytest.approx(ev.predicted_total)


# --- summary ------------------------------------------------------------------------------


def test_rfm_summary_counts_repeat_purchase_days_in_weeks() -> None:
    # CDNOW customer 4 of the sample: paper spreadsheet x = 2, t_x = 30.43, T = 38.86.
    o = orders([
        (4, "1997-01-01", 29.33), (4, "1997-01-18", 29.73), (4, "1997-01-18 15:00", 10.0),
        (4, "1997-08-02", 14.96), (4, "1997-12-12", 26.48),  # after the end: not counted
        (7, "1997-09-30", 5.0),  # first purchase on the last day: T = 0
    ])
    s = lc.rfm_summary(o, end=CALIBRATION_END)
    assert s.columns == ["person_id", "frequency", "recency", "T", "monetary"]
    first, last = s.row(0, named=True), s.row(1, named=True)
    assert first["frequency"] == 2  # two orders on 18 Jan are one purchase day
    assert first["recency"] == pytest.approx(213 / 7) and first["T"] == pytest.approx(272 / 7)
    assert first["monetary"] == pytest.approx((29.73 + 10.0 + 14.96) / 2)
    assert last == {"person_id": 7, "frequency": 0, "recency": 0.0, "T": 0.0, "monetary": 0.0}


def test_rfm_summary_insists_on_matching_time_zones() -> None:
    o = orders([(1, "2024-01-01T10:00:00+00:00", 1.0)])
    with pytest.raises(ValueError, match="time-zone aware"):
        lc.rfm_summary(o, end=datetime(2024, 2, 1))
    s = lc.rfm_summary(o, end=datetime(2024, 1, 8, tzinfo=UTC), period_days=1)
    assert s["T"].to_list() == [7.0]
    # Days are the column's local days: 1 Jan in Moscow starts at 21:00 UTC on 31 Dec.
    moscow = o.with_columns(pl.col("ordered_at").dt.convert_time_zone("Europe/Moscow"))
    s = lc.rfm_summary(moscow, end=datetime(2024, 1, 8, tzinfo=UTC), period_days=1)
    assert s["T"].to_list() == [7.125]


# --- BG/NBD properties --------------------------------------------------------------------


def alive_by_bayes(x: int, tx: float, T: float) -> float:
    """P(alive) as the share of the likelihood (eq. 6) from "not dropped out after the last
    purchase": B(a, b+x) / (alpha+T)^(r+x) against B(a+1, b+x-1) / (alpha+t_x)^(r+x)."""
    r, alpha, a, b = PUBLISHED.r, PUBLISHED.alpha, PUBLISHED.a, PUBLISHED.b
    alive = np.exp(betaln(a, b + x) - (r + x) * np.log(alpha + T))
    if x == 0:
        return 1.0
    dead = np.exp(betaln(a + 1, b + x - 1) - (r + x) * np.log(alpha + tx))
    return float(alive / (alive + dead))


def test_p_alive_is_one_without_repeats_and_falls_with_time_since_last_purchase() -> None:
    rows = [(0, 0, 39), (0, 0, 5), (3, 38, 39), (3, 30, 39), (3, 20, 39), (3, 5, 39), (60, 9, 39)]
    p = lc.p_alive(PUBLISHED, summary(rows))
    assert p[:2].tolist() == [1.0, 1.0]
    assert np.all(np.diff(p[2:6]) < 0) and 0 < p[5] < p[2] < 1
    assert p == pytest.approx([alive_by_bayes(*row) for row in rows], rel=1e-9)


def test_expected_purchases_grow_with_t_and_start_at_zero() -> None:
    s = summary([(0, 0, 39), (2, 30.43, 38.86), (10, 35, 39)])
    ts = [0.0, 1.0, 4.0, 13.0, 39.0, 52.0, 200.0]
    e = np.stack([lc.expected_purchases(PUBLISHED, s, t) for t in ts])
    assert np.all(e[0] == 0.0)
    assert np.all(np.diff(e, axis=0) > 0)


@pytest.mark.parametrize(("x", "tx", "T", "t"),
                         [(0, 0, 39, 39), (1, 2, 39, 39), (2, 30.43, 38.86, 52),
                          (7, 38, 39, 4), (40, 38.5, 39, 39), (120, 70, 75, 100), (3, 1, 1.5, 0.3)])
def test_expected_purchases_match_the_posterior_integral(x: int, tx: float, T: float,
                                                         t: float) -> None:
    # Independent route: alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) a posteriori;
    # for given (lambda, p) the expected count in t is (1 - exp(-lambda p t)) / p.
    r, alpha, a, b = PUBLISHED.r, PUBLISHED.alpha, PUBLISHED.a, PUBLISHED.b
    s = summary([(x, tx, T)])

    def given_p(p: float) -> float:  # E over lambda, divided by p (its limit at p = 0)
        if p == 0:
            return (r + x) * t / (alpha + T)
        return -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T))) / p

    integral, _ = quad(given_p, 0, 1, weight="alg", wvar=(a - 1, b + x - 1), epsabs=0,
                       epsrel=1e-11)
    expected = alive_by_bayes(x, tx, T) * integral / np.exp(betaln(a, b + x))
    assert lc.expected_purchases(PUBLISHED, s, t)[0] == pytest.approx(expected, rel=1e-7)


# A fit at the Poisson limit (customers alike: r and alpha in the millions), as a small
# simulated shop produced; scipy's 2F1 alone returns NaN there.
NEAR_POISSON = lc.BgNbdParams(r=562781.507, alpha=17696782.08, a=107.964, b=608.955,
                              loglik=-336.9, customers=37, converged=False)


@pytest.mark.parametrize(("x", "tx", "T", "t"),
                         [(5, 57.7, 78.0, 12.8), (1, 2.0, 66.5, 12.8), (0, 0, 20, 12.8)])
def test_expected_purchases_at_the_poisson_limit_match_the_posterior_integral(
        x: int, tx: float, T: float, t: float) -> None:
    params = NEAR_POISSON
    r, alpha, a, b = params.r, params.alpha, params.a, params.b

    def given_p(p: float) -> float:
        return -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T))) / p if p else (
            (r + x) * t / (alpha + T))

    # p ~ Beta(a, b + x) is sharply peaked here: integrate its density around the mode.
    density = beta_dist(a, b + x)
    lo, hi = density.ppf(1e-12), density.isf(1e-12)
    integral, _ = quad(lambda p: given_p(p) * density.pdf(p), lo, hi, epsabs=0, epsrel=1e-10,
                       limit=200)
    alive = lc.p_alive(params, summary([(x, tx, T)]))[0]
    expected = alive * integral
    got = lc.expected_purchases(params, summary([(x, tx, T)]), t)[0]
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-6)


def test_baseline_is_the_historical_rate() -> None:
    s = summary([(3, 20, 30), (0, 0, 10), (0, 0, 0)])
    assert lc.baseline_expected_purchases(s, 10).tolist() == [1.0, 0.0, 0.0]


def test_expected_order_value_shrinks_own_mean_towards_the_population() -> None:
    gg = lc.GammaGammaParams(p=6.25, q=3.74, v=15.44, loglik=0.0, customers=946, converged=True)
    s = summary([(0, 0, 10), (1, 5, 10), (50, 9, 10), (2, 5, 10), (2, 5, 10)],
                monetary=[0.0, 100.0, 100.0, 0.0, -5.0])
    e = lc.expected_order_value(gg, s)
    assert e[0] == pytest.approx(gg.mean_order_value) == pytest.approx(15.44 * 6.25 / 2.74)
    assert gg.mean_order_value < e[1] < e[2] < 100.0
    assert e[2] == pytest.approx(6.25 * (15.44 + 5000) / (6.25 * 50 + 2.74))
    assert e[3] == e[4] > 0  # a zero (or negative) mean value still gets a positive estimate


# --- edge cases and scoring ---------------------------------------------------------------


def test_not_enough_data() -> None:
    empty = orders([]).cast({"person_id": pl.Int64, "ordered_at": pl.Datetime("us"),
                             "amount": pl.Float64})
    with pytest.raises(lc.NotEnoughData, match="0 customers"):
        lc.score(empty, datetime(2024, 1, 1))
    # 30 customers, each with two orders on one day: no repeat purchase day at all.
    one_day = orders([(i, f"2024-01-{1 + i % 28:02d}T{h:02d}:00", 9.0)
                      for i in range(30) for h in (9, 17)])
    with pytest.raises(lc.NotEnoughData, match="0 repeat buyers"):
        lc.score(one_day, datetime(2024, 2, 1))
    few = orders([(i, d, 5.0) for i in range(4) for d in ("2024-01-01", "2024-01-05")])
    with pytest.raises(lc.NotEnoughData, match="4 customers"):
        lc.fit_bgnbd(lc.rfm_summary(few, end=datetime(2024, 2, 1)))
    # Repeat buyers whose repeat orders were all free: BG/NBD fits, Gamma-Gamma cannot.
    free = orders([(i, d, v) for i in range(20)
                   for d, v in (("2024-01-01", 5.0), ("2024-01-09", 0.0))])
    s = lc.rfm_summary(free, end=datetime(2024, 2, 1))
    assert lc.fit_bgnbd(s).customers == 20
    with pytest.raises(lc.NotEnoughData, match="Gamma-Gamma"):
        lc.fit_gamma_gamma(s)


def test_score_returns_one_typed_row_per_customer() -> None:
    o = simulated_orders(600)
    end = datetime(2024, 9, 30)
    scores = lc.score(o, end)
    assert scores.schema == pl.Schema({
        "person_id": pl.Int64, "p_active": pl.Float64, "expected_orders_30d": pl.Float64,
        "expected_orders_90d": pl.Float64, "expected_order_value": pl.Float64,
        "expected_value_12m": pl.Float64,
    })
    buyers = o.filter(pl.col("ordered_at") <= end)["person_id"].unique().sort()
    assert scores["person_id"].to_list() == buyers.to_list()
    values = scores.drop("person_id").to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert scores["p_active"].max() <= 1.0
    assert (scores["expected_orders_90d"] > scores["expected_orders_30d"]).all()

    # Repeat-free buyers are alive by assumption; frequent buyers are expected to buy more.
    s = lc.rfm_summary(o, end=end)
    joined = s.join(scores, on="person_id")
    assert (joined.filter(pl.col("frequency") == 0)["p_active"] == 1.0).all()
    assert (joined.filter(pl.col("frequency") >= 5)["expected_orders_90d"].mean()
            > 3 * joined.filter(pl.col("frequency") == 0)["expected_orders_90d"].mean())

    # A single customer scored with the shop's model: one row, the same numbers.
    model = lc.fit(s)
    person = joined.filter(pl.col("frequency") >= 2)["person_id"][0]
    one = lc.score(o.filter(pl.col("person_id") == person), end, model=model)
    assert one.height == 1
    assert one.row(0) == pytest.approx(scores.filter(pl.col("person_id") == person).row(0))
