"""Markdown tables of the tilt audit (tools/bench/tilt_audit.sh) for README and the model cards.

    python3 tools/bench/audit_table.py [--compact] models/fashion [models/fashion-v ...]

Reads MODEL/logs/verify/SAMPLER/report.json (written by `onnxalign verify`) and prints, per model, one row per
sampler and lambda: the importance-weighted ground truth of E[r] and of the Trouser rate (linear classifier), the
exact and the fast tilt with z-scores, KL of the truth and of the exact tilt, the ground truth's ESS, and network
evaluations per effective sample of the exact tilt and of the ground truth itself.
"""
import json
import os
import sys

SAMPLERS = ["ddpm", "ddim", "dpm++2m", "euler-maruyama"]


def cell(stat, run=None, digits=2):
    v, se = stat["value"], stat["standard_error"]
    text = f"{v:.{digits}f} ± {se:.{digits}f}"
    return text if run is None else f"{text} (z {run['z']:+.1f})"


def compact(models):
    """One table over all models for README: E[r] and the Trouser rate, z against the ground truth, and the cost."""
    print("| model | sampler | λ | E[r]: truth | exact | fast | Trouser rate: truth | exact | fast | evaluations / effective sample: exact, truth |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        for sampler in SAMPLERS:
            path = os.path.join(model, "logs", "verify", sampler, "report.json")
            if not os.path.exists(path):
                continue
            for audit in json.load(open(path))["audits"]:
                truth = audit["ground_truth"]
                runs = {r["mode"]: r for r in audit["runs"]}
                r, rate = "class:Trouser", "rate:class:Trouser"

                def z(run, name, fmt):
                    st = run["statistics"][name]
                    return f"{fmt(st['value'])} ({st['z']:+.1f})"

                t_r = truth["statistics"][r]["value"]
                t_rate = truth["statistics"][rate]["value"]
                pct = lambda v: f"{100 * v:.0f} %"
                num = lambda v: f"{v:.2f}"
                print(f"| `{os.path.basename(model)}` | {sampler} | {audit['lambda']:g} | {t_r:.2f} | {z(runs['exact'], r, num)} | {z(runs['fast'], r, num)} | "
                      f"{pct(t_rate)} | {z(runs['exact'], rate, pct)} | {z(runs['fast'], rate, pct)} | "
                      f"{runs['exact']['evaluations_per_effective_sample']:.0f}, {truth['evaluations_per_effective_sample']:.0f} |")


def main(models):
    for model in models:
        print(f"\n**{model}** (reward class:Trouser, 50 steps, 4096 base samples)\n")
        print("| sampler | λ | truth E[r] | exact E[r] | fast E[r] | truth Trouser rate | exact | fast | truth KL | exact KL | truth ESS | evaluations / effective sample: exact, truth | verdict exact / fast |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sampler in SAMPLERS:
            path = os.path.join(model, "logs", "verify", sampler, "report.json")
            if not os.path.exists(path):
                continue
            report = json.load(open(path))
            for audit in report["audits"]:
                truth = audit["ground_truth"]
                runs = {r["mode"]: r for r in audit["runs"]}
                exact, fast = runs.get("exact"), runs.get("fast")
                reward = "class:Trouser"
                rate = "rate:class:Trouser"
                t_r, t_rate = truth["statistics"][reward], truth["statistics"][rate]

                def run_cell(run, name, digits=2):
                    s = run["statistics"][name]
                    return f"{s['value']:.{digits}f} ± {s['standard_error']:.{digits}f} (z {s['z']:+.1f})"

                kl_exact = f"{exact['kl_divergence']['value']:.2f} ± {exact['kl_divergence']['standard_error']:.2f} (z {exact['kl_z']:+.1f})"
                reliable = "" if truth["reliable"] else " (unreliable)"
                verdict = f"{'agrees' if exact['agrees'] else 'DISAGREES'} / {'agrees' if fast['agrees'] else 'disagrees'}"
                print(f"| {sampler} | {audit['lambda']:g} | {cell(t_r)} | {run_cell(exact, reward)} | {run_cell(fast, reward)} | "
                      f"{cell(t_rate, digits=3)} | {run_cell(exact, rate, 3)} | {run_cell(fast, rate, 3)} | {cell(truth['kl_divergence'])} | {kl_exact} | "
                      f"{truth['effective_sample_size']:.0f}{reliable} | {exact['evaluations_per_effective_sample']:.0f}, {truth['evaluations_per_effective_sample']:.0f} | {verdict} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--compact":
        compact(args[1:] or ["models/fashion", "models/fashion-v"])
    else:
        main(args or ["models/fashion", "models/fashion-v"])
