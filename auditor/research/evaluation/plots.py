"""The evaluation report's plots: detection against IR, and ROC curves."""

from collections import defaultdict
from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(8, 5))
    attacks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report["detection"]:
        attacks[row["attack"]].append(row)
    colours = plt.get_cmap("tab20")  # eleven attacks: more than the default ten colours
    for k, (attack, rows) in enumerate(attacks.items()):
        rows.sort(key=lambda r: r["ir"])
        x = [r["ir"] for r in rows]
        y = [r["detection_rate"] for r in rows]
        err = [  # clipped: the Wilson bound can sit a rounding error inside the rate
            [max(0.0, r["detection_rate"] - r["ci_low"]) for r in rows],
            [max(0.0, r["ci_high"] - r["detection_rate"]) for r in rows],
        ]
        ax.errorbar(
            x, y, yerr=err, marker="o", capsize=3, label=attack, color=colours((2 * k) % 20 + (2 * k) // 20)
        )
    honest = report["honest"]["suspect"]["rate"] + report["honest"]["fail"]["rate"]
    ax.axhline(honest, color="grey", linestyle="--", label="honest fail or suspect")
    ax.set_xscale("log")
    ax.set_xlabel("inflation ratio (injected / genuine tokens)")
    ax.set_ylabel("detection rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Detection vs IR (Wilson 95% CI)")
    fig.tight_layout()
    paths.append(out / "detection_vs_ir.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for ir, curve in report["roc"].items():
        ax.plot([0.0, *curve["fpr"]], [0.0, *curve["tpr"]], label=f"IR {ir} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false-positive rate (honest)")
    ax.set_ylabel("true-positive rate (inflated)")
    ax.set_title("Verifier ROC (p-value), content attacks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
