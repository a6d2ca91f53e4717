"""README table of `onnxalign bench --black-box` (models/fashion/logs/black_box/bench.json), without numpy.

    python3 tools/bench/black_box_table.py models/fashion/logs/black_box/bench.json
"""
import json, sys
b = json.load(open(sys.argv[1]))["black_box"]
print(f"| λ | method | network evals | ESS | ESS per 1000 evals | E_π[r] (z vs reference) | class rate (error) |")
print("|---|---|---|---|---|---|---|")
for row in b["rows"]:
    ref = row["reference"]
    print(f"| {row['lambda']:g} | reference ({ref['base_samples']} base samples, ESS {ref['effective_sample_size']:.0f}) | | | | "
          f"{ref['mean_reward']['value']:.3f} ± {ref['mean_reward']['standard_error']:.3f} | {100*ref['class_rate']['value']:.1f} % |")
    for m in row["methods"]:
        r = m["mean_reward"]
        ess = f"{m['effective_sample_size']:.0f} of {m['particles']}" if "effective_sample_size" in m else "—"
        per = f"{1000*m['ess_per_network_evaluation']:.2f}" if "ess_per_network_evaluation" in m else "—"
        z = f" (z {m['mean_reward_z']:+.1f})" if "mean_reward_z" in m else f" ({m['mean_reward_error']:+.3f})"
        print(f"| | {m['method']} | {m['network_evaluations']} | {ess} | {per} | {r['value']:.3f} ± {r['standard_error']:.3f}{z} | "
              f"{100*m['class_rate']['value']:.1f} % ({100*m['class_rate_error']:+.1f}) |")
print(f"\nReward network {b['reward_ms_per_sample']:.2f} ms per sample, diffusion network {b['network_ms_per_sample_step']:.2f} ms per sample and step "
      f"({b['reward_ms_per_sample']/b['network_ms_per_sample_step']:.2f}×).")
