"""Collects tools/bench/ldm_card.sh's runs into WORK/card.json and prints the model card's two tables (plain python3)."""
import json
import os
import sys

work, count = sys.argv[1], int(sys.argv[2])
names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]   # the classifiers' classes.json
prompts = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]   # the training prompts' names


def load(name):
    quality = json.load(open(os.path.join(work, name + ".quality.json")))
    report = json.load(open(os.path.join(work, name, "report.json")))
    return quality, report


def linear(name, cls):
    """The class share by models/fashion's linear classifier."""
    return json.load(open(os.path.join(work, name + ".classifier.json")))["class_shares"][cls]


def share(quality, cls):
    return quality["class_shares"][cls]


def se(p, n):
    return max(p * (1 - p), 0.0) ** 0.5 / n ** 0.5


card = {"count": count, "prompts": [], "interplay": []}
print(f"| prompt | evaluator, w = 1 | evaluator, w = 3 | linear classifier, w = 1 | linear classifier, w = 3 | mean confidence w = 1 / 3 |")
print("|---|---|---|---|---|---|")
for c, cls in enumerate(names):
    q1, _ = load(f"prompt{c}-w1")
    q3, _ = load(f"prompt{c}-w3")
    p1, p3 = share(q1, cls), share(q3, cls)
    l1, l3 = linear(f"prompt{c}-w1", cls), linear(f"prompt{c}-w3", cls)
    card["prompts"].append({"class": cls, "w1": p1, "w3": p3, "linear_w1": l1, "linear_w3": l3,
                            "confidence_w1": q1["mean_confidence"], "confidence_w3": q3["mean_confidence"]})
    print(f"| a photo of a {prompts[c]} | {p1:.3f} ± {se(p1, count):.3f} | {p3:.3f} ± {se(p3, count):.3f} | "
          f"{l1:.3f} ± {se(l1, count):.3f} | {l3:.3f} ± {se(l3, count):.3f} | {q1['mean_confidence']:.3f} / {q3['mean_confidence']:.3f} |")
for w in (1, 3):
    q, _ = load(f"empty-w{w}")
    card[f"empty_prompt_w{w}"] = q["class_shares"]
print()
print("| run | λ | Shirt rate | KL(π‖p) nats | ESS | network evaluations / sample |")
print("|---|---|---|---|---|---|")
for lam in ("1", "0.3"):
    for label, name in (("no prompt (the empty prompt), w = 1", f"tilt-empty-l{lam}"),
                        ("“a photo of a shirt”, w = 1", f"tilt-shirt-w1-l{lam}"),
                        ("“a photo of a shirt”, w = 3", f"tilt-shirt-w3-l{lam}")):
        q, r = load(name)
        a = r["alignment"]
        kl = a.get("kl_divergence") or {}
        ess = (a.get("smc") or {}).get("effective_sample_size")
        p = share(q, "Shirt")
        row = {"run": label, "lambda": float(lam), "shirt_rate": p, "kl": kl.get("value"), "kl_se": kl.get("standard_error"),
               "ess": ess, "evaluations_per_sample": a.get("evaluations_per_returned_sample", {}).get("network"), "base_law": a.get("base_law")}
        card["interplay"].append(row)
        kl_text = "—" if kl.get("value") is None else f"{kl['value']:.3f} ± {kl.get('standard_error') or 0:.3f}"
        ess_text = "—" if ess is None else f"{ess:.0f}"
        ev = row["evaluations_per_sample"]
        print(f"| {label} | {lam} | {p:.3f} ± {se(p, count):.3f} | {kl_text} | {ess_text} | {'—' if ev is None else f'{ev:.0f}'} |")
json.dump(card, open(os.path.join(work, "card.json"), "w"), indent=1)
