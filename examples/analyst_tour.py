"""An analyst's tour, as a script or cell by cell in Jupyter (`# %%` marks the cells).

Runs three small agencies (population registry, health, tax) on loopback, then
queries them the way an analyst would: results as Arrow tables, shown as HTML
tables in a notebook, turned into pandas (or Polars) data frames.

    .venv/bin/python examples/analyst_tour.py
"""

# %%
import atexit
import shutil
import tempfile
from pathlib import Path

import fedsql
from fedsql import scenario
from fedsql.local import LocalFederation

work = Path(tempfile.mkdtemp(prefix="fedsql-tour-"))
agencies = LocalFederation(work, scenario.build(work, people=2000), users=scenario.USERS)
atexit.register(shutil.rmtree, work, ignore_errors=True)
atexit.register(agencies.stop)  # the connectors stop with the script (or the kernel)
print("agencies:", ", ".join(f"{c.name} at {c.address}" for c in agencies.connectors))

# %%
# alice is an analyst: national IDs come hashed (equal IDs still join across
# agencies), names and birth dates generalised, the small region suppressed.
fed = fedsql.connect(agencies.config_path, user="alice")
result = fed.query(
    """
    SELECT p.region, v.diagnosis, count(*) AS visits, round(avg(t.income)) AS avg_income
    FROM people p
    JOIN visits v ON v.national_id = p.national_id
    JOIN tax_returns t ON t.national_id = p.national_id
    GROUP BY ALL ORDER BY visits DESC LIMIT 8
    """
)
result  # noqa: B018 - in Jupyter, an HTML table with rows and bytes per agency underneath

# %%
print(result)
df = result.to_pandas()  # pandas via Arrow (pip install 'fedsql[notebook]')
print(df.dtypes.to_string())
print("visits per region:", df.groupby("region")["visits"].sum().to_dict())

# %%
# fed.sql(...) is a plain pyarrow.Table; any Arrow consumer takes it.
people = fed.sql("SELECT national_id, name, birth_date FROM people ORDER BY name LIMIT 3")
print(people.to_pandas().to_string(index=False))
print(fed.explain("SELECT count(*) FROM people JOIN visits USING (national_id)"))

# %%
fed.close()
