"""Statistics, markdown tables and the plot of a ``benchmarks.step`` run."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import cases

ORDER = ("jopt", "jopt-flat", "optax", "torch-foreach", "torch-fused")


def summarize(record: dict[str, Any]) -> None:
    """Adds ``median_ms``, ``p10_ms``, the quartiles ``p25_ms`` and ``p75_ms`` and
    ``samples`` (and drops the raw times; ``round_ms``, each round's median, stays)."""
    times = sorted(record.pop("times", []))
    record["samples"] = len(times)
    if times:
        record["median_ms"] = statistics.median(times) * 1e3
        for q in (10, 25, 75):
            record[f"p{q}_ms"] = times[int(q / 100 * (len(times) - 1))] * 1e3
        if record.get("compile_s") is not None:
            record["compile_s"] = max(0.0, record["compile_s"] - record["median_ms"] / 1e3)
    else:
        record["median_ms"] = record["p10_ms"] = record["p25_ms"] = record["p75_ms"] = None


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    layout = r["layout"]["name"] if isinstance(r.get("layout"), dict) else r.get("model")
    return (r["kind"], r.get("optimizer"), layout, r.get("variant"))


def attach_floors(out: dict[str, Any]) -> None:
    """Turns each case's floor kernel time into a bandwidth and a floor per optimizer.

    The kernel is timed in XLA and in torch (`cases.FLOORS`); the faster sets the floor,
    so that no library's loop quality hides inside the bandwidth.
    """
    floors: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in out["results"]:
        if r["framework"] in cases.FLOORS and r.get("median_ms"):
            best = floors.get(_key(r))
            if best is None or r["median_ms"] < best["median_ms"]:
                floors[_key(r)] = r
    bandwidths = {}
    for r in out["results"]:
        floor = floors.get(_key(r))
        if r["kind"] != "step" or floor is None or not floor.get("median_ms"):
            continue
        bandwidth = 12 * r["params"] / (floor["median_ms"] / 1e3)  # bytes/s
        bandwidths[r["layout"]["name"]] = bandwidth
        floor_ms = cases.BYTES_PER_PARAM[r["optimizer"]] * r["params"] / bandwidth * 1e3
        r["bandwidth_gbs"] = bandwidth / 1e9
        r["floor_ms"] = floor_ms
        r["floor_kernel"] = floor["framework"]
        if r.get("median_ms"):
            r["share_of_floor"] = floor_ms / r["median_ms"]
    out["bandwidth_gbs"] = {k: v / 1e9 for k, v in bandwidths.items()}


def _by_case(out: dict[str, Any], kind: str) -> dict[tuple[Any, ...], dict[str, dict]]:
    table: dict[tuple[Any, ...], dict[str, dict]] = {}
    for r in out["results"]:
        if r["kind"] == kind and r["framework"] not in cases.FLOORS:
            table.setdefault(_key(r), {})[r["framework"]] = r
    return table


def _ms(r: dict[str, Any] | None) -> str:
    if r is None:
        return "n/a"
    if r.get("error"):
        return "error"
    value = r.get("median_ms")
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not a.get("median_ms") or not b.get("median_ms"):
        return ""
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def _round_ratios(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """The lowest and highest ratio of ``a``'s round medians to ``b``'s, round by round."""
    if not a or not b or not a.get("round_ms") or not b.get("round_ms"):
        return ""
    ratios = [x / y for x, y in zip(a["round_ms"], b["round_ms"], strict=False) if y > 0]
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""


def _share(r: dict[str, Any] | None) -> str:
    if not r or r.get("share_of_floor") is None:
        return ""
    return f"{100 * r['share_of_floor']:.0f}%"


def _size(n: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _mib(b: int | None) -> str:
    return "" if b is None else f"{b / 2**20:.0f}"


def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    workers = m.get("workers", {})
    versions = ", ".join(
        f"{k} {v}"
        for info in workers.values()
        for k, v in info.items()
        if k in ("jax", "optax", "torch", "jopt")
    )
    versions = ", ".join(dict.fromkeys(versions.split(", ")))
    device = next((i.get("device_kind") or i.get("device") for i in workers.values()), "?")
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, device {device}; {versions}.",
        f"Load average at start {m['load_average_start'][0]:.1f}, "
        f"at end {m.get('load_average_end', [0])[0]:.1f}; total {out['wall_s']:.0f} s.",
        "",
    ]
    steps = _by_case(out, "step")
    if steps:
        lines += [
            "Optimizer step, median ms per step (jax: jit with params and state donated). "
            "Ratios are step-time ratios (< 1: jopt faster); by round: the lowest and highest "
            "ratio of the two frameworks' medians in one sampling round (rounds alternate the "
            "frameworks, so this is how far the machine's drift moves the comparison); "
            "floor % = ideal-traffic time / step time, at the bandwidth of the in-place kernel "
            "(the faster of XLA's and torch's) measured in the same rotation.",
            "",
            "| optimizer | layout | params | leaves | jopt | jopt-flat | optax | torch foreach"
            " | torch fused | floor | jopt/optax | by round | flat/optax | jopt/torch fused | "
            "flat/torch fused | jopt floor % | flat floor % | optax floor % "
            "| torch fused floor % |",
            "|" + "---|" * 19,
        ]
        for (_, opt, layout, variant), row in steps.items():
            any_r = next(iter(row.values()))
            name = layout + (f" ({variant})" if variant else "")
            lines.append(
                "| "
                + " | ".join(
                    [
                        opt,
                        name,
                        _size(any_r["params"]),
                        str(any_r["leaves"]),
                        *(_ms(row.get(fw)) for fw in ORDER),
                        f"{any_r['floor_ms']:.3g}" if any_r.get("floor_ms") else "",
                        _ratio(row.get("jopt"), row.get("optax")),
                        _round_ratios(row.get("jopt"), row.get("optax")),
                        _ratio(row.get("jopt-flat"), row.get("optax")),
                        _ratio(row.get("jopt"), row.get("torch-fused")),
                        _ratio(row.get("jopt-flat"), row.get("torch-fused")),
                        _share(row.get("jopt")),
                        _share(row.get("jopt-flat")),
                        _share(row.get("optax")),
                        _share(row.get("torch-fused")),
                    ]
                )
                + " |"
            )
        lines += ["", _compile_memory_table(steps)]
    trains = _by_case(out, "train")
    if trains:
        lines += [
            "",
            f"Whole training step (forward + backward + {cases.TRAIN_OPTIMIZER}), median ms "
            "(by round: as above).",
            "",
            "| model | params | leaves | jopt | jopt-flat | optax | torch foreach | torch fused"
            " | jopt/optax | by round | flat/optax | jopt compile s | flat compile s "
            "| optax compile s |",
            "|" + "---|" * 14,
        ]
        for (_, _, model, _), row in trains.items():
            any_r = next(iter(row.values()))
            compile_s = [row.get(fw, {}).get("compile_s") for fw in ("jopt", "jopt-flat", "optax")]
            lines.append(
                "| "
                + " | ".join(
                    [
                        model,
                        _size(any_r["params"]),
                        str(any_r["leaves"]),
                        *(_ms(row.get(fw)) for fw in ORDER),
                        _ratio(row.get("jopt"), row.get("optax")),
                        _round_ratios(row.get("jopt"), row.get("optax")),
                        _ratio(row.get("jopt-flat"), row.get("optax")),
                        *("" if c is None else f"{c:.2f}" for c in compile_s),
                    ]
                )
                + " |"
            )
    sweep = {}
    for r in out["results"]:
        if ":" in r["framework"] and r.get("median_ms"):
            sweep.setdefault(r["layout"]["name"], {})[r["framework"].split(":")[1]] = r
    if sweep:
        lines += [
            "",
            "Packing sweep (jopt Adam; every leaf packed vs every leaf in its own buffer).",
            "",
            "| layout | leaf size | leaves | packed ms | own ms | packed/own |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in sweep.items():
            any_r = next(iter(row.values()))
            size = any_r["params"] // any_r["leaves"]
            lines.append(
                f"| {name} | {size} | {any_r['leaves']} | {_ms(row.get('packed'))} | "
                f"{_ms(row.get('own'))} | {_ratio(row.get('packed'), row.get('own'))} |"
            )
    errors = [r for r in out["results"] if r.get("error")]
    if errors:
        lines += ["", "Errors:", ""]
        lines += [f"- {r['framework']} {_key(r)}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _compile_memory_table(steps: dict[tuple[Any, ...], dict[str, dict]]) -> str:
    lines = [
        "Compile time (trace, lower and compile: the median of up to --compile-repeats runs "
        "from cleared caches, then the first call minus a steady step; s), step memory "
        "growth (MiB allocated by a step beyond its arguments; donated / not donated, "
        "* = derived as temporaries plus outputs) and optimizer state size (bytes per "
        "parameter byte).",
        "",
        "| optimizer | layout | jopt compile | flat compile | optax compile | jopt MiB | "
        "flat MiB | optax MiB | jopt state | flat state | optax state | torch state |",
        "|" + "---|" * 12,
    ]
    for (_, opt, layout, variant), row in steps.items():
        name = layout + (f" ({variant})" if variant else "")

        def comp(fw: str, row: dict = row) -> str:
            c = row.get(fw, {}).get("compile_s")
            return "" if c is None else f"{c:.2f}"

        def mem(fw: str, row: dict = row) -> str:
            m = (row.get(fw) or {}).get("memory") or {}
            d, n = m.get("donated"), m.get("not_donated")
            if not d:
                return ""
            star = "*" if n and n.get("derived") else ""
            return f"{_mib(d['growth'])} / {_mib(n['growth']) if n else '?'}{star}"

        def state(fw: str, row: dict = row) -> str:
            r = row.get(fw) or {}
            if not r.get("param_bytes") or r.get("state_bytes") is None:
                return ""
            return f"{r['state_bytes'] / r['param_bytes']:.2f}"

        torch = "torch-fused" if "torch-fused" in row else "torch-foreach"
        lines.append(
            f"| {opt} | {name} | {comp('jopt')} | {comp('jopt-flat')} | {comp('optax')} | "
            f"{mem('jopt')} | {mem('jopt-flat')} | {mem('optax')} | {state('jopt')} | "
            f"{state('jopt-flat')} | {state('optax')} | {state(torch)} |"
        )
    return "\n".join(lines)


def one_line(results: list[dict[str, Any]], base: dict[str, Any]) -> str:
    key = _key({**base, "framework": ""})
    parts = []
    for r in results:
        if _key(r) == key and r.get("median_ms") is not None:
            parts.append(f"{r['framework']} {r['median_ms']:.3g} ms")
        elif _key(r) == key and r.get("error"):
            parts.append(f"{r['framework']} error")
    return ", ".join(parts)


def plot(out: dict[str, Any], path: str) -> None:
    """Step time against parameter count: one panel per optimizer, one line per library."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [r for r in out["results"] if r["kind"] == "step" and r.get("median_ms")]
    optimizers = list(dict.fromkeys(r["optimizer"] for r in steps))
    if not optimizers:
        return
    cols = min(4, len(optimizers))
    rows = (len(optimizers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    styles = {
        "jopt": ("C0", "o"),
        "jopt-flat": ("C1", "s"),
        "optax": ("C2", "^"),
        "torch-foreach": ("C3", "v"),
        "torch-fused": ("C4", "D"),
        "floor": ("0.5", "."),
    }
    for ax, opt in zip(axes.flat, optimizers, strict=False):
        for fw, (color, marker) in styles.items():
            points = sorted(
                (r["params"], r["median_ms"], r["layout"]["name"])
                for r in steps
                if r["optimizer"] == opt and r["framework"] == fw
            )
            if fw == "floor":
                points = sorted(
                    (r["params"], r["floor_ms"], r["layout"]["name"])
                    for r in steps
                    if r["optimizer"] == opt and r["framework"] == "optax" and r.get("floor_ms")
                )
                fw = "memory floor"
            if not points:
                continue
            xs, ys, _ = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                marker=marker,
                color=color,
                label=fw,
                linestyle="--" if fw == "memory floor" else "-",
                linewidth=1,
            )
        for r in steps:
            if r["optimizer"] == opt and r["framework"] == "optax":
                ax.annotate(
                    r["layout"]["name"],
                    (r["params"], r["median_ms"]),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(2, 4),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(opt, fontsize=9)
        ax.set_xlabel("parameters", fontsize=8)
        ax.set_ylabel("step, ms", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(optimizers) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(out["machine"]["cpu"] + f" ({out['config']['device']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
