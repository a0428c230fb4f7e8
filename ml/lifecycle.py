"""Customer lifecycle: is a buyer still active, how often will they buy, what are they worth.

Two published probability models, fitted by maximum likelihood with scipy (the `lifetimes`
package that used to do this is archived):

BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way: An Alternative to
the Pareto/NBD Model", Marketing Science 24(2), 275-284). While active, a customer buys as a
Poisson process with rate lambda ~ Gamma(r, alpha); after every purchase they drop out with
probability p ~ Beta(a, b). Each customer is summarised by x (repeat purchases), t_x (time of
the last purchase, from the first) and T (time from the first purchase to the end of
observation). Formulas used (numbers are the paper's equations):

- log-likelihood (eq. 6), summed over customers:
  L = B(a, b+x)/B(a, b) * G(r+x)/G(r) * alpha^r / (alpha+T)^(r+x)
      + [x > 0] * B(a+1, b+x-1)/B(a, b) * G(r+x)/G(r) * alpha^r / (alpha+t_x)^(r+x)
- P(alive | x, t_x, T) (eq. 11) = 1 / (1 + [x > 0] * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x));
  a customer who never repeated is alive by assumption (they can only drop out after a
  purchase), so their p_alive is 1.
- expected purchases in the next t periods (eq. 10):
  E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
                        * 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))] / (1 + [x > 0] * a/(b+x-1)
                        * ((alpha+T)/(alpha+t_x))^(r+x))
  computed after Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z),
  which turns the bracket into 1 - w^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z) with
  w = (alpha+T)/(alpha+T+t): its series stays small for heavy buyers (large x), where the
  original form multiplies a vanishing power by a huge 2F1.

Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves for Customer Base
Analysis", Journal of Marketing Research 42(4); likelihood as in Fader & Hardie's note "The
Gamma-Gamma Model of Monetary Value", 2013). A customer's purchase values are Gamma(p, nu)
with nu ~ Gamma(q, v) across customers. Fitted on repeat buyers' mean repeat-purchase value
m_x:
  f(m_x | x) = G(px+q) / (G(px) G(q)) * v^q * x^(px) * m_x^(px-1) / (v + x m_x)^(px+q)
  E[M | m_x, x] = p (v + x m_x) / (px + q - 1)   (q > 1; x = 0 gives the mean v p / (q-1))
It assumes a customer's spend per order does not depend on how often they buy.

Expected 12-month value = expected purchases in the next 365 days x expected value per
purchase. Not discounted: over one year a 10 % annual rate would lower it by about 5 %
(purchases fall on average mid-year), less than the models' own uncertainty, and an
undiscounted figure is what a marketer compares with last year's spend.

Conventions (the paper's): a "purchase" is a purchase DAY (orders of one calendar day, in the
time zone of the timestamps, count once and their values add up), frequency = repeat purchase
days, recency = t_x, both times in periods of `period_days` days (7: weeks, as in the paper),
monetary = mean value of the repeat purchase days (0 without any). Only orders at or before
`end` count; T runs from the first purchase day to `end`.

Numerics: log-likelihoods through gammaln / betaln / logaddexp; positive parameters fitted as
logs with L-BFGS-B, bounded so a degenerate data set gives finite numbers; times are divided by
the mean T and values by the mean m_x while fitting (alpha and v are scale parameters), which
gives every data set the same well-conditioned starting point.

Too little data to fit (fewer than MIN_CUSTOMERS customers or MIN_REPEAT_BUYERS repeat buyers)
raises NotEnoughData so the caller can fall back to `baseline_expected_purchases` (the
customer's own historical purchase rate), which `evaluate` reports beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

MIN_CUSTOMERS = 10
MIN_REPEAT_BUYERS = 3
DAYS_12M = 365.0
# Log-parameters stay within e^-15..e^15 (on scaled data): finite even when the optimum
# runs off to a boundary, far beyond any real data set's estimates.
_LOG_BOUND = 15.0
_SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary")


class NotEnoughData(ValueError):
    """The data cannot support the model (too few customers or repeat buyers): use a
    baseline instead."""


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    loglik: float  # in the summary's time unit
    customers: int
    converged: bool


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    v: float
    loglik: float
    customers: int  # repeat buyers with a positive mean value: those the fit used
    converged: bool

    @property
    def mean_order_value(self) -> float:
        """Population mean value of a purchase, v p / (q - 1)."""
        return self.v * self.p / (self.q - 1.0)


@dataclass(frozen=True)
class LifecycleModel:
    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    period_days: float  # the time unit of the summary the model was fitted on


@dataclass(frozen=True)
class HoldoutEvaluation:
    customers: int
    holdout_periods: float
    actual_total: int  # repeat purchase days in the holdout
    predicted_total: float  # model
    baseline_total: float  # historical rate
    mae_model: float  # per customer
    mae_baseline: float
    rmse_model: float
    rmse_baseline: float
    params: BgNbdParams
    per_customer: pl.DataFrame  # customer, frequency, recency, T, actual, predicted, baseline


# --- data ---------------------------------------------------------------------------------


def _cutoff(orders: pl.DataFrame, ts: str, moment: datetime) -> pl.Expr:
    """`moment` as a literal comparable with the timestamp column (both naive or both aware;
    an aware one in the column's zone)."""
    dtype = orders.schema[ts]
    aware = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    if aware != (moment.tzinfo is not None):
        raise ValueError(f"{ts} is {'time-zone aware' if aware else 'naive'}; "
                         f"give the cut-off ({moment}) the same way")
    if aware:
        return pl.lit(moment).dt.convert_time_zone(dtype.time_zone)
    return pl.lit(moment)


def _purchase_days(orders: pl.DataFrame, customer: str, ts: str, value: str | None,
                   after: datetime | None, end: datetime) -> pl.DataFrame:
    """One row per customer and purchase day in (after, end]: customer, day, value (summed)."""
    stamp = pl.col(ts)
    if orders.schema[ts] == pl.Date:
        stamp = stamp.cast(pl.Datetime("us"))
    amount = pl.col(value).cast(pl.Float64).fill_null(0.0) if value else pl.lit(0.0)
    keep = stamp <= _cutoff(orders, ts, end)
    if after is not None:
        keep = keep & (stamp > _cutoff(orders, ts, after))
    return (
        orders.filter(keep & pl.col(customer).is_not_null())
        .select(pl.col(customer).alias("customer"), stamp.dt.truncate("1d").alias("day"),
                amount.alias("value"))
        .group_by("customer", "day")
        .agg(pl.col("value").sum())
    )


def rfm_summary(orders: pl.DataFrame, *, customer: str = "person_id", ts: str = "ordered_at",
                value: str | None = "amount", end: datetime,
                period_days: float = 7.0) -> pl.DataFrame:
    """One row per customer with an order at or before `end`: `customer`, frequency (repeat
    purchase days), recency (first to last purchase day) and T (first purchase day to `end`)
    in periods of `period_days` days, monetary (mean value of the repeat purchase days)."""
    if period_days <= 0:
        raise ValueError("period_days must be positive")
    days = _purchase_days(orders, customer, ts, value, None, end)
    end_lit = _cutoff(orders, ts, end)
    per_day = 86_400.0 * period_days
    out = (
        days.group_by("customer")
        .agg(
            first=pl.col("day").min(),
            last=pl.col("day").max(),
            frequency=(pl.len() - 1).cast(pl.Int64),
            total=pl.col("value").sum(),
            first_value=pl.col("value").sort_by("day").first(),
        )
        .select(
            "customer",
            "frequency",
            recency=(pl.col("last") - pl.col("first")).dt.total_seconds() / per_day,
            T=(end_lit - pl.col("first")).dt.total_seconds() / per_day,
            monetary=pl.when(pl.col("frequency") > 0)
            .then((pl.col("total") - pl.col("first_value")) / pl.col("frequency"))
            .otherwise(0.0),
        )
        .sort("customer")
        .rename({"customer": customer})
    )
    return out.with_columns(pl.col("recency", "T", "monetary").cast(pl.Float64))


def _arrays(summary: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = summary["frequency"].cast(pl.Float64).to_numpy()
    return x, summary["recency"].to_numpy().astype(float), summary["T"].to_numpy().astype(float)


def _fit(neg_loglik, n_params: int) -> tuple[np.ndarray, bool]:
    res = minimize(neg_loglik, np.zeros(n_params), method="L-BFGS-B",
                   bounds=[(-_LOG_BOUND, _LOG_BOUND)] * n_params,
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
    # L-BFGS-B on a finite-difference gradient often ends with a failed line search right at
    # the optimum; a vanishing gradient (per-customer log-likelihood) counts as converged.
    converged = bool(res.success) or float(np.max(np.abs(res.jac))) < 1e-4
    return np.exp(res.x), converged


# --- BG/NBD -------------------------------------------------------------------------------


def _bgnbd_loglik(r: float, alpha: float, a: float, b: float, x: np.ndarray, tx: np.ndarray,
                  T: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood (eq. 6 of the paper)."""
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    dropped_never = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    dropped_after_last = np.full_like(x, -np.inf)
    rep = x > 0
    dropped_after_last[rep] = betaln(a + 1, b + x[rep] - 1) - (r + x[rep]) * np.log(alpha
                                                                                    + tx[rep])
    return common + np.logaddexp(dropped_never, dropped_after_last)


def fit_bgnbd(summary: pl.DataFrame) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters for an `rfm_summary` (alpha in its time unit)."""
    customers = summary.height
    repeat = int((summary["frequency"] > 0).sum()) if customers else 0
    if customers < MIN_CUSTOMERS or repeat < MIN_REPEAT_BUYERS:
        raise NotEnoughData(f"BG/NBD needs at least {MIN_CUSTOMERS} customers and "
                            f"{MIN_REPEAT_BUYERS} repeat buyers; got {customers} customers, "
                            f"{repeat} repeat buyers")
    x, tx, T = _arrays(summary)
    # Customers with the same (x, t_x, T) add the same term: fit on the distinct rows.
    rows, weight = np.unique(np.column_stack([x, tx, T]), axis=0, return_counts=True)
    scale = float(T.mean())  # > 0: a repeat buyer has T >= t_x > 0
    xs, txs, Ts = rows[:, 0], rows[:, 1] / scale, rows[:, 2] / scale

    def neg(theta: np.ndarray) -> float:
        r, alpha, a, b = np.exp(theta)
        return -float(weight @ _bgnbd_loglik(r, alpha, a, b, xs, txs, Ts)) / customers

    (r, alpha, a, b), ok = _fit(neg, 4)
    alpha *= scale
    loglik = float(weight @ _bgnbd_loglik(r, alpha, a, b, xs, rows[:, 1], rows[:, 2]))
    return BgNbdParams(float(r), float(alpha), float(a), float(b), loglik, customers, ok)


def p_alive(params: BgNbdParams, summary: pl.DataFrame) -> np.ndarray:
    """P(still active at T | x, t_x, T) per row of `summary` (eq. 11); 1 without repeats."""
    x, tx, T = _arrays(summary)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    rep = x > 0
    log_odds_dead = np.full_like(x, -np.inf)
    xr = x[rep]
    log_odds_dead[rep] = (np.log(a) - np.log(b + xr - 1)
                          + (r + xr) * (np.log(alpha + T[rep]) - np.log(alpha + tx[rep])))
    return expit(-log_odds_dead)


def expected_purchases(params: BgNbdParams, summary: pl.DataFrame,
                       t: float | np.ndarray) -> np.ndarray:
    """Expected purchases (purchase days) in the next `t` periods after each customer's T
    (eq. 10, via Euler's transformation of the 2F1)."""
    x, _, T = _arrays(summary)
    t = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
    if np.any(t < 0):
        raise ValueError("t must not be negative")
    r, alpha, b = params.r, params.alpha, params.b
    a = params.a
    if abs(a - 1.0) < 1e-7:  # (a-1) cancels in the limit; keep off the 0/0
        a = 1.0 + 1e-7
    w = (alpha + T) / (alpha + T + t)
    bracket = 1.0 - w ** (a - 1.0) * _hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, 1.0 - w)
    return (a + b + x - 1.0) / (a - 1.0) * bracket * p_alive(params, summary)


def _hyp2f1(a: float, b: float, c: np.ndarray, z: np.ndarray, max_terms: int = 2_000
            ) -> np.ndarray:
    """scipy's 2F1, with its power series summed directly where scipy gives up. A fit near
    the Poisson limit (no heterogeneity between customers: r and alpha in the millions) asks
    for a huge negative first parameter at a tiny z, where scipy returns NaN but the series
    converges in a few terms."""
    out = np.asarray(hyp2f1(a, b, c, z), dtype=float)
    bad = ~np.isfinite(out) & (np.abs(z) < 1.0)
    if not bad.any():
        return out
    cz, zz = np.broadcast_to(c, out.shape)[bad], np.broadcast_to(z, out.shape)[bad]
    term, total = np.ones_like(zz), np.ones_like(zz)
    for k in range(max_terms):
        term = term * (a + k) * (b + k) / ((cz + k) * (k + 1.0)) * zz
        total += term
        if np.all(np.abs(term) <= 1e-16 * np.abs(total)):
            break
    else:  # not converged: leave it undefined rather than return a wrong number
        total[np.abs(term) > 1e-16 * np.abs(total)] = np.nan
    out = out.copy()
    out[bad] = total
    return out


def baseline_expected_purchases(summary: pl.DataFrame, t: float | np.ndarray) -> np.ndarray:
    """Baseline: the customer's own repeat purchase rate so far (x / T) over the next t
    periods; 0 for a customer whose first purchase is at T = 0."""
    x, _, T = _arrays(summary)
    rate = np.divide(x, T, out=np.zeros_like(x), where=T > 0)
    return rate * np.asarray(t, dtype=float)


# --- Gamma-Gamma --------------------------------------------------------------------------


def _gg_loglik(p: float, q: float, v: float, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1) * np.log(m)
            + px * np.log(x) - (px + q) * np.log(v + x * m))


def fit_gamma_gamma(summary: pl.DataFrame) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from the repeat buyers with a positive
    monetary value (v in the summary's currency)."""
    used = summary.filter((pl.col("frequency") > 0) & (pl.col("monetary") > 0))
    if used.height < MIN_REPEAT_BUYERS:
        raise NotEnoughData(f"Gamma-Gamma needs at least {MIN_REPEAT_BUYERS} repeat buyers with "
                            f"a positive order value; got {used.height}")
    x = used["frequency"].cast(pl.Float64).to_numpy()
    m = used["monetary"].to_numpy().astype(float)
    scale = float(m.mean())

    def neg(theta: np.ndarray) -> float:
        p, q, v = np.exp(theta)
        return -float(_gg_loglik(p, q, v, x, m / scale).sum()) / used.height

    (p, q, v), ok = _fit(neg, 3)
    v *= scale
    if q <= 1.0:
        raise NotEnoughData(f"Gamma-Gamma fit gives q = {q:.3g} <= 1: order values are too "
                            "heavy-tailed for the model (its mean value is unbounded)")
    loglik = float(_gg_loglik(p, q, v, x, m).sum())
    return GammaGammaParams(float(p), float(q), float(v), loglik, used.height, ok)


def expected_order_value(params: GammaGammaParams, summary: pl.DataFrame) -> np.ndarray:
    """Expected value of a customer's future purchase: their own mean shrunk towards the
    population mean, the more so the fewer repeat purchases they have (negative means count
    as 0)."""
    x = summary["frequency"].cast(pl.Float64).to_numpy()
    m = np.clip(summary["monetary"].to_numpy().astype(float), 0.0, None)
    p, q, v = params.p, params.q, params.v
    return p * (v + x * m) / (p * x + q - 1.0)


# --- together -----------------------------------------------------------------------------


def fit(summary: pl.DataFrame, period_days: float = 7.0) -> LifecycleModel:
    """Both models on one `rfm_summary` made with the same `period_days`."""
    return LifecycleModel(fit_bgnbd(summary), fit_gamma_gamma(summary), period_days)


def predict(model: LifecycleModel, summary: pl.DataFrame) -> pl.DataFrame:
    """Scores for every row of `summary` (any size, one customer included): the customer
    column, p_active, expected_orders_30d / _90d, expected_order_value, expected_value_12m."""
    customer = next(c for c in summary.columns if c not in _SUMMARY_COLUMNS)
    per = model.period_days
    bg = model.bgnbd
    order_value = expected_order_value(model.gamma_gamma, summary)
    return pl.DataFrame({
        customer: summary[customer],
        "p_active": pl.Series(p_alive(bg, summary), dtype=pl.Float64),
        "expected_orders_30d": pl.Series(expected_purchases(bg, summary, 30.0 / per),
                                         dtype=pl.Float64),
        "expected_orders_90d": pl.Series(expected_purchases(bg, summary, 90.0 / per),
                                         dtype=pl.Float64),
        "expected_order_value": pl.Series(order_value, dtype=pl.Float64),
        "expected_value_12m": pl.Series(
            expected_purchases(bg, summary, DAYS_12M / per) * order_value, dtype=pl.Float64),
    })


def score(orders: pl.DataFrame, end: datetime, *, customer: str = "person_id",
          ts: str = "ordered_at", value: str | None = "amount", period_days: float = 7.0,
          model: LifecycleModel | None = None) -> pl.DataFrame:
    """One row per customer with an order at or before `end` (see `predict`), from `model`
    or from both models fitted on these orders (NotEnoughData if they cannot be)."""
    summary = rfm_summary(orders, customer=customer, ts=ts, value=value, end=end,
                          period_days=period_days)
    if model is None:
        model = fit(summary, period_days)
    elif model.period_days != period_days:
        raise ValueError(f"the model was fitted with period_days={model.period_days}")
    return predict(model, summary)


def evaluate(orders: pl.DataFrame, calibration_end: datetime, holdout_end: datetime, *,
             customer: str = "person_id", ts: str = "ordered_at", value: str | None = "amount",
             period_days: float = 7.0) -> HoldoutEvaluation:
    """Fit BG/NBD on orders up to `calibration_end`, predict each of those customers' purchase
    days in (calibration_end, holdout_end] and compare with what they did and with the
    historical-rate baseline. Customers first seen in the holdout are not counted."""
    if holdout_end <= calibration_end:
        raise ValueError("holdout_end must be after calibration_end")
    summary = rfm_summary(orders, customer=customer, ts=ts, value=value, end=calibration_end,
                          period_days=period_days)
    params = fit_bgnbd(summary)
    t = (holdout_end - calibration_end).total_seconds() / 86_400.0 / period_days
    actual = (
        _purchase_days(orders, customer, ts, None, calibration_end, holdout_end)
        .group_by("customer").agg(actual=pl.len().cast(pl.Int64))
        .rename({"customer": customer})
    )
    per_customer = (
        summary.select(customer, "frequency", "recency", "T")
        .with_columns(
            predicted=pl.Series(expected_purchases(params, summary, t), dtype=pl.Float64),
            baseline=pl.Series(baseline_expected_purchases(summary, t), dtype=pl.Float64),
        )
        .join(actual, on=customer, how="left", maintain_order="left")
        .with_columns(pl.col("actual").fill_null(0))
        .select(customer, "frequency", "recency", "T", "actual", "predicted", "baseline")
    )
    act = per_customer["actual"].to_numpy().astype(float)
    pred = per_customer["predicted"].to_numpy()
    base = per_customer["baseline"].to_numpy()
    return HoldoutEvaluation(
        customers=summary.height,
        holdout_periods=t,
        actual_total=int(act.sum()),
        predicted_total=float(pred.sum()),
        baseline_total=float(base.sum()),
        mae_model=float(np.abs(pred - act).mean()),
        mae_baseline=float(np.abs(base - act).mean()),
        rmse_model=float(np.sqrt(((pred - act) ** 2).mean())),
        rmse_baseline=float(np.sqrt(((base - act) ** 2).mean())),
        params=params,
        per_customer=per_customer,
    )
