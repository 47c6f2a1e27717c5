"""One SVG per claim, from the evidence the claim was computed from. Deterministic bytes."""

from __future__ import annotations

from pathlib import Path

from benchsuite.report.claims import ClaimResult


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "benchsuite"
    return plt


def _shade(ax, blocks):
    for s, e in blocks:
        ax.axvspan(s - 0.5, e + 0.5, color="tab:orange", alpha=0.12, lw=0)


def has_figure(claim: ClaimResult) -> bool:
    return any(claim.figure.get(k) for k in ("series", "bars", "lines", "classes"))


def claim_figure(claim: ClaimResult, path: Path) -> bool:
    """Draw the claim's figure to `path`; False when there is nothing to draw."""
    if not has_figure(claim):
        return False
    f = claim.figure
    plt = _setup()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if "series" in f:
        for s in f["series"]:
            ax.errorbar(s["x"], s["mean"], yerr=s["sd"], marker="o", capsize=3, label=s["label"])
        ax.set_xlabel(f["xlabel"])
        ax.set_ylabel(f["ylabel"])
        if f.get("log"):
            ax.set_xscale("log")
    elif "bars" in f:
        labels = [b["label"] for b in f["bars"]]
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [b["before"] for b in f["bars"]], 0.4, label="CKA inside block")
        ax.bar([i + 0.2 for i in x], [b["after"] for b in f["bars"]], 0.4, label="after removing PC1")
        ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean CKA")
    elif "lines" in f:
        for line in f["lines"][:8]:
            ax.plot(line["x"], line["y"], marker=".", label=line["label"])
        _shade(ax, f["lines"][0]["blocks"])
        ax.set_xlabel("layer (shaded: block structure of the first run)")
        ax.set_ylabel({"C5": "cross-seed CKA", "C7": "probe accuracy", "C8": "accuracy drop"}.get(claim.claim, "value"))
    else:
        for c in f["classes"][:1]:
            x = list(range(len(c["x"])))
            ax.bar([i - 0.2 for i in x], c["a"], 0.4, label="group A")
            ax.bar([i + 0.2 for i in x], c["b"], 0.4, label="group B")
            ax.set_xticks(x, [f"{k}*" if k in c["flagged"] else str(k) for k in c["x"]])
            ax.set_xlabel("class (* significant after correction)")
            ax.set_ylabel("accuracy")
            ax.set_ylim(min(min(c["a"]), min(c["b"])) - 0.05, 1.0)
    ax.set_title(f"{claim.claim}: {claim.verdict}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return True
