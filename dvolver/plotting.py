"""A picture of a search's front: dominated candidates greyed, the front highlighted and joined."""

from __future__ import annotations

from pathlib import Path

from .objectives import OBJECTIVES
from .store import Candidate


def axis_label(objective: str, table_mode: bool = False) -> str:
    o = OBJECTIVES[objective]
    unit = f"{o.unit}, table's count" if table_mode and o.cheap else o.unit
    name = "validation accuracy" if objective == "acc" and not table_mode else objective
    return f"{name} ({unit})"


def plot_front(candidates: list[Candidate], front: list[Candidate], objectives: list[str], path: str | Path,
               title: str, table_mode: bool = False) -> Path:
    """Accuracy (or the first objective) up, the first cost objective across on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_name = "acc" if "acc" in objectives else objectives[0]
    x_candidates = [o for o in objectives if o != y_name] or [o for o in ("flops", "params") if o != y_name]
    x_name = x_candidates[0]
    finished = [c for c in candidates if c.status == "finished" and x_name in c.objectives and y_name in c.objectives]
    on_front = {c.id for c in front}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rest = [c for c in finished if c.id not in on_front]
    ax.scatter([c.objectives[x_name] for c in rest], [c.objectives[y_name] for c in rest], s=14, c="0.7",
               label=f"dominated ({len(rest)})")
    best = sorted((c for c in finished if c.id in on_front), key=lambda c: c.objectives[x_name])
    # Joined as a staircase only when the front lives in these two axes; a projection of a 3-D front is not one.
    ax.plot([c.objectives[x_name] for c in best], [c.objectives[y_name] for c in best], "o", c="tab:red", ms=5,
            linestyle="-" if len(objectives) == 2 else "none", drawstyle="steps-post",
            label=f"Pareto front ({len(best)})")
    if OBJECTIVES[x_name].cheap:
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(x_name, table_mode))
    ax.set_ylabel(axis_label(y_name, table_mode))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
