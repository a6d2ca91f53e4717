"""Markdown table of the strong-tilt runs (λ = 1 and 0.3, exact mode) for README.

    python3 tools/bench/strong_table.py     # reads models/*/logs/strong_tilts/SAMPLER-lambda-L.json (generate's report.json)
"""
import glob
import json
import os

print("| model | sampler | λ | algorithm | particles | ESS | effective systems | distinct of 64 returned | evaluations / effective sample | KL(q‖p) | E[r] |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob("models/*/logs/strong_tilts/*.json")):
    report = json.load(open(path))
    a = report["alignment"]
    smc = a["smc"]
    model = path.split(os.sep)[1]
    kl = a["kl_divergence"]
    r = a["reward_after"]
    print(f"| `{model}` | {report['sampler']['name']} | {a['lambda']:g} | {smc['algorithm']} | {smc['particles']} | {smc['effective_sample_size']:.0f} | "
          f"{smc['effective_systems']:.1f} of {smc['systems']} | {smc['distinct_returned_samples']} | {smc['evaluations_per_effective_sample']:.0f} | "
          f"{kl['value']:.2f} ± {kl['standard_error']:.2f} | {r['mean']:.2f} ± {r['standard_error']:.2f} |")
