"""Draws one deployment's weight over time (target/bench/weights.csv, written
by the fleet bench) as benches/weight-over-time.png for BENCHMARKS.md."""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source = sys.argv[1] if len(sys.argv) > 1 else "target/bench/weights.csv"
target = sys.argv[2] if len(sys.argv) > 2 else "benches/weight-over-time.png"

with open(source, newline="") as f:
    rows = [(float(r["seconds"]), float(r["weight"]), r["event"]) for r in csv.DictReader(f)]

fig, ax = plt.subplots(figsize=(8, 3.5), dpi=120)
ax.step([r[0] for r in rows], [r[1] for r in rows], where="post", color="#1f6feb", linewidth=2)
markers = {"GatePassed": ("o", "#2da44e", "gate passed"), "Shifted": ("s", "#1f6feb", "shifted")}
for kind, (marker, color, label) in markers.items():
    points = [(s, w) for s, w, e in rows if e == kind]
    ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, color=color, label=label, zorder=3)
ax.set_xlabel("seconds since the deployment was created")
ax.set_ylabel("% of traffic on the new version")
ax.set_ylim(-5, 105)
ax.set_title("One deployment alone (fleet bench): steps:10@10s,50@10s,100, gated at every shift")
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(target)
print(f"wrote {target}")
