"""
Accuracy against mean NFE, drawn from eval.py's rows (`eval.py --plot`; the suite's report adds its own labels).
matplotlib is an optional dependency, imported here only.
"""
import math
import os


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib, an optional dependency: pip install matplotlib") from None


def pyplot():
    need_matplotlib()
    import matplotlib
    matplotlib.use("Agg")   # files only, no display
    import matplotlib.pyplot as plt
    return plt


def short_name(r):
    """A learned row's point label: its checkpoint's file name and options ('full:tau=0.5')."""
    path, _, opts = r["policy"].partition(":")
    return os.path.splitext(os.path.basename(path))[0] + (f":{opts}" if opts else "")


def plot_fronts(panels, path, label=short_name, front=None):
    """panels {title: rows} -> one panel each, accuracy against mean NFE (log axis): a curve per hand rule (rows
    without "trained"), a star per learned row annotated with label(row); front(rows) may return extra (name, points)
    curves (the suite's alpha-conditioned policy)."""
    plt = pyplot()
    cols = min(2, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4 * nrows), squeeze=False)
    for ax, (title, rs) in zip(axes.flat, panels.items()):
        hand = [r for r in rs if "trained" not in r]
        for fam in sorted({r["policy"].split(":")[0] for r in hand}):
            pts = sorted((r["mean_nfe"], r["accuracy"]) for r in hand if r["policy"].split(":")[0] == fam)
            ax.plot(*zip(*pts), marker="o", ms=3, label=fam)
        for name, pts in (front(rs) if front else []):
            ax.plot(*zip(*sorted(pts)), marker="D", ms=4, color="crimson", lw=1.5, label=name, zorder=2)
        for r in rs:
            if "trained" in r and label(r) is not None:
                ax.scatter(r["mean_nfe"], r["accuracy"], marker="*", s=90, color="black", zorder=3)
                ax.annotate(label(r), (r["mean_nfe"], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mean NFE")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
