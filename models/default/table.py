"""Prints the default model's results table (markdown) from the eval JSONs build.sh wrote."""
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
rows = [
    ("DMoERM (f32 directory)", "eval-dmoerm.json"),
    ("DMoERM (int8 packed, shipped)", "eval-dmoerm-int8.json"),
    ("single RM", "eval-single.json"),
    ("ensemble, mean", "eval-ensemble-mean.json"),
    ("ensemble, worst case (min)", "eval-ensemble-min.json"),
    ("ensemble, uncertainty (mean - 0.5 var)", "eval-ensemble-uncertainty.json"),
]
evals = {name: json.loads((work / f).read_text()) for name, f in rows if (work / f).exists()}
tasks = sorted(next(iter(evals.values()))["per_task"])
print("| model | accuracy | " + " | ".join(tasks) + " | router | best-of-4 gold |")
print("| --- | --- | " + " | ".join("---" for _ in tasks) + " | --- | --- |")
for name, e in evals.items():
    router = e.get("router_accuracy")
    cells = [f"{e['accuracy']:.3f}"] + [f"{e['per_task'][t]:.3f}" for t in tasks]
    cells += ["n/a" if router is None else f"{router:.3f}", f"{e['bon']['model']:.3f}"]
    print(f"| {name} | " + " | ".join(cells) + " |")
e = next(iter(evals.values()))
print(f"\n{e['pairs']} test pairs, {e['bon']['prompts']} prompts x {e['bon']['mean_candidates']:.0f} candidates; "
      f"best-of-4 gold: oracle {e['bon']['oracle']:.3f}, random {e['bon']['random']:.3f}.")
