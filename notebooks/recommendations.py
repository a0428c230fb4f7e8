# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Recommendations: quality against popularity, lists, coverage
#
# Reads the `ml` tables that `crm train` writes and the latest recommendations run in MLflow
# (`MLFLOW_TRACKING_URI`, else the project's SQLite store), on the database every `crm`
# command uses (`CRM_DATABASE_URL`, else the embedded one). Run `crm transform` and
# `crm train` first. Open with `jupyter lab notebooks/recommendations.py` (jupytext) or run
# it top to bottom as a script.

# %%
import matplotlib.pyplot as plt
import polars as pl
from mlflow import MlflowClient

from crm.settings import database_url
from ml.registry import tracking_uri
from ml.warehouse import read

url = database_url()
client = MlflowClient(tracking_uri())

# %% [markdown]
# ## Quality on the time holdout: the model beside popularity
# The last 20 % of interactions in time are held out; both rankings come from the same
# training part, and nobody gets credit for a product they already had. The figures are the
# latest training run's; `champion_precision_at_10` is the champion re-fitted on that run's
# training part, when there was one to compare.

# %%
experiment = client.get_experiment_by_name("crm-recs")
runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                          max_results=1) if experiment else []
if runs:
    logged = runs[0].data.metrics
    names = ["precision_at_10", "recall_at_10", "auc", "coverage"]
    quality = pl.DataFrame({
        "metric": names,
        "lightfm": [logged.get(m) for m in names],
        "popularity": [logged.get(f"baseline_{m}") for m in names],
    }).with_columns(ratio=pl.col("lightfm") / pl.col("popularity"))
    run_facts = pl.DataFrame({
        "run": [runs[0].info.run_id], "promoted": [runs[0].data.tags.get("promoted")],
        "evaluated_people": [logged.get("evaluated_people")],
        "interactions": [logged.get("interactions")], "products": [logged.get("products")],
        "champion_precision_at_10": [logged.get("champion_precision_at_10")],
    })
else:  # too little data for a model: every list came from popularity (cold start)
    quality = pl.DataFrame(schema={"metric": pl.String, "lightfm": pl.Float64,
                                   "popularity": pl.Float64, "ratio": pl.Float64})
    run_facts = pl.DataFrame()
quality

# %%
run_facts

# %%
if quality.height:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(quality.height)
    ax.bar([i - 0.2 for i in x], quality["lightfm"].fill_null(0), width=0.4, label="LightFM")
    ax.bar([i + 0.2 for i in x], quality["popularity"].fill_null(0), width=0.4,
           label="popularity")
    ax.set_xticks(list(x), quality["metric"].to_list())
    ax.set_title("Time holdout")
    ax.legend()
    fig.tight_layout()

# %% [markdown]
# ## Lists for a few people, with product names
# Three people the model knows and two served by cold start (their segment's and device's
# popular products), each beside what they bought.

# %%
lists = read(url, """
    select r.user_id, r.rank, r.product_id, p.product_name, p.category, r.score, r.source,
           r.model_version
    from ml.user_recommendations r
    left join crm.dim_products p on p.product_id = r.product_id
    order by r.user_id, r.rank
""")
chosen = pl.concat([
    lists.filter(pl.col("source") == source).select("user_id").unique().sort("user_id")
    .head(n) for source, n in (("model", 3), ("cold_start", 2))
])
bought = read(url, """
    select h.user_id::text as user_id,
           string_agg(distinct item ->> 'product_name', ', ') as bought
    from crm.purchase_history h
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(h.order_items) = 'array' then h.order_items else '[]' end) item
    where h.user_id is not null group by 1
""")
examples = (lists.join(chosen, on="user_id")
            .group_by("user_id", "source", maintain_order=True)
            .agg(recommended=pl.col("product_name").fill_null(pl.col("product_id")).head(5)
                 .str.join(", "))
            .join(bought, on="user_id", how="left"))
with pl.Config(fmt_str_lengths=120, tbl_width_chars=200):
    print(examples)
examples

# %% [markdown]
# ## Coverage: how much of the catalogue gets shown
# Share of the catalogue in at least one list, by where the list came from, and how evenly
# recommendations spread over products (a popularity list shows everyone the same few).

# %%
catalogue = read(url, "select count(*) as n from crm.dim_products")["n"][0]
coverage = (lists.group_by("source")
            .agg(people=pl.col("user_id").n_unique(), products=pl.col("product_id").n_unique())
            .with_columns(share_of_catalogue=pl.col("products") / max(catalogue, 1))
            .sort("source"))
coverage

# %%
shown = lists.group_by("product_id").len().sort("len", descending=True)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(range(1, shown.height + 1), shown["len"])
ax.set_xlabel("product, most shown first")
ax.set_ylabel("lists it appears in")
ax.set_title(f"{shown.height} of {catalogue} products shown")
fig.tight_layout()

# %%
summary = pl.DataFrame({
    "people_with_a_list": [lists["user_id"].n_unique()],
    "catalogue": [catalogue],
    "catalogue_coverage": [shown.height / max(catalogue, 1)],
})
summary
