"""Whether Tessera's and exactextract's zonal tables are equal: max relative difference of
mean and sum per (zone, time), and rows that one has and the other lacks."""
import sys

import numpy as np
import pandas as pd

a = pd.read_parquet(sys.argv[1])
b = pd.read_parquet(sys.argv[2])
a["time"] = pd.to_datetime(a["time"])
m = a.merge(b, on=["zone", "time"], suffixes=("_tessera", "_ee"), how="outer", indicator=True)
unmatched = int((m["_merge"] != "both").sum())
worst = 0.0
for s in ["mean", "sum"]:
    x, y = m[f"{s}_tessera"].to_numpy(), m[f"{s}_ee"].to_numpy()
    both = ~np.isnan(x) & ~np.isnan(y)
    if (np.isnan(x) != np.isnan(y)).any():
        unmatched += int((np.isnan(x) != np.isnan(y)).sum())
    rel = np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-9)
    worst = max(worst, float(rel.max(initial=0.0)))
print(f"rows {len(a)} vs {len(b)}, unmatched {unmatched}, max relative difference {worst:.2e}")
sys.exit(0 if unmatched == 0 and worst <= 1e-6 else 1)
