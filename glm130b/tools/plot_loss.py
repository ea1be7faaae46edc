"""Draw training loss curves from TensorBoard event files to a PNG.

    python -m glm130b.tools.plot_loss runs/glm-tiny runs/glm-tiny-bf16 --output loss.png
    python -m glm130b.tools.plot_loss runs/glm-130b --x tokens --smooth 50

Every folder holding event files under a given folder is one curve, labelled by its path;
a resumed run that logs into the same folder continues its curve. `--x` picks the scalar the
trainer wrote against iterations (`train/loss`), consumed samples (`train/loss_vs_samples`)
or tokens (`train/loss_vs_tokens`), so runs with different batch sizes compare fairly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import run
from ..errors import UsageError
from ..files import atomic_open

X_SUFFIX = {"step": "", "samples": "_vs_samples", "tokens": "_vs_tokens"}
X_LABEL = {"step": "iteration", "samples": "consumed samples", "tokens": "consumed tokens"}


def _need(module: str, package: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise UsageError(f"{package} is not installed: pip install {package}") from None


def run_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    return sorted({f.parent for f in folder.rglob("events.out.tfevents.*")})


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one run folder, as (step, value) sorted by step. All values are kept
    (TensorBoard would sample 10000), and a step logged twice (a run resumed from an earlier
    checkpoint) keeps its last value."""
    tb = _need("tensorboard.backend.event_processing.event_accumulator", "tensorboard")
    events = tb.EventAccumulator(str(run_dir), size_guidance={tb.SCALARS: 0})
    events.Reload()
    return {tag: sorted({e.step: e.value for e in events.Scalars(tag)}.items())
            for tag in events.Tags()["scalars"]}


def curves(folders: list[Path], tag: str) -> dict[str, list[tuple[int, float]]]:
    """`tag` from every run under the folders; each folder must have it in at least one run."""
    found = {}
    for folder in folders:
        runs = {d: read_scalars(d) for d in run_folders(folder)}
        if not runs:
            raise UsageError(f"no TensorBoard event files under {folder}")
        with_tag = {str(d): scalars[tag] for d, scalars in runs.items() if tag in scalars}
        if not with_tag:
            tags = sorted({t for scalars in runs.values() for t in scalars})
            raise UsageError(f"no scalar {tag!r} under {folder}; it has: "
                             f"{', '.join(tags) or 'no scalars'}")
        found.update(with_tag)
    return found


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points, so the curve starts where the data does."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(found: dict[str, list[tuple[int, float]]], output: Path, tag: str, x: str,
         smooth: int) -> None:
    matplotlib = _need("matplotlib", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for label, points in found.items():
        steps, values = zip(*points)
        if smooth > 1:
            line, = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
            ax.plot(steps, moving_average(list(values), smooth), color=line.get_color(),
                    label=label)
        else:
            ax.plot(steps, values, label=label)
    ax.set_xlabel(X_LABEL[x])
    ax.set_ylabel(tag + (f" (mean of {smooth})" if smooth > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(output, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m glm130b.tools.plot_loss",
                                description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="run or TensorBoard folders")
    p.add_argument("--output", type=Path, default=Path("loss.png"))
    p.add_argument("--tag", default="train/loss")
    p.add_argument("--x", choices=tuple(X_SUFFIX), default="step",
                   help="horizontal axis: iterations, consumed samples or tokens")
    p.add_argument("--smooth", type=int, default=1, help="moving average over N points")
    args = p.parse_args(argv)
    if args.smooth < 1:
        p.error("--smooth must be >= 1")
    if not args.output.parent.is_dir():
        raise UsageError(f"no folder {args.output.parent} to write {args.output.name} in")
    tag = args.tag + X_SUFFIX[args.x]
    found = curves(args.folders, tag)
    plot(found, args.output, tag, args.x, args.smooth)
    print(f"wrote {args.output}: {tag} of {len(found)} run(s), "
          f"{sum(len(v) for v in found.values())} points")
    return 0


if __name__ == "__main__":
    run(main)
