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
# # Segments: sizes, profiles, lifecycle
#
# Reads the marts and the `ml` tables that `crm train` writes, on the database every `crm`
# command uses (`CRM_DATABASE_URL`, else the embedded one). Run `crm transform` and
# `crm train` first. Open with `jupyter lab notebooks/segments.py` (jupytext) or run it
# top to bottom as a script.

# %%
import matplotlib.pyplot as plt
import polars as pl

from crm.settings import database_url
from ml.warehouse import read

url = database_url()

# %% [markdown]
# ## How many people are in each segment
# Rule segments overlap (a person may be in several); each person is in exactly one cluster.

# %%
sizes = read(url, """
    select assigned_by, segment, count(*) as people, min(model_version) as model_version
    from ml.user_segments group by 1, 2 order by 1, 3 desc
""")
sizes

# %%
fig, ax = plt.subplots(figsize=(8, 4))
ax.barh([f"{a}: {s}" for a, s in sizes.select("assigned_by", "segment").iter_rows()],
        sizes["people"])
ax.set_xlabel("people")
ax.set_title("Segment sizes")
fig.tight_layout()

# %% [markdown]
# ## What each cluster does: its average behaviour beside the whole shop's

# %%
profile = read(url, """
    select s.segment,
           count(*) as people,
           avg(coalesce(f.orders, 0))::float8 as orders,
           avg(coalesce(f.monetary, 0))::float8 as spend,
           avg(coalesce(f.sessions, 0))::float8 as sessions,
           avg(coalesce(f.share_mobile, 0))::float8 as share_mobile,
           avg(coalesce(f.push_open_rate, 0))::float8 as push_open_rate
    from ml.user_segments s
    left join crm.user_features f on f.user_id::text = s.user_id
    where s.assigned_by = 'cluster'
    group by s.segment order by people desc
""")
profile

# %% [markdown]
# ## Lifecycle: chance of still being active against expected 12-month value

# %%
life = read(url, "select p_active, expected_value_12m from ml.user_lifecycle")
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(life["p_active"].fill_null(1.0), life["expected_value_12m"], s=6, alpha=0.5)
ax.set_xlabel("p_active (BG/NBD)")
ax.set_ylabel("expected value, 12 months")
ax.set_title(f"{life.height} buyers")
fig.tight_layout()

# %%
summary = pl.DataFrame({
    "people_with_a_segment": read(url, "select count(distinct user_id) as n "
                                       "from ml.user_segments")["n"],
    "buyers_scored": [life.height],
})
summary
