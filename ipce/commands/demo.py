"""`ipce demo`: the main job end to end on built-in data, on a laptop CPU.

Generates the synthetic AIGC quality set (cached), gives the tiny CLIP a short stand-in for
CLIP's web pretraining (cached), fine-tunes it with the paper's protocol on one split (all in
ipce/demo/run.py), then prints and writes the held-out metrics and the pair table: held-out
images scored against their own prompt and against a mismatched one (<out>/summary.json,
<out>/pairs.md), and the model's quality map of a half-noisy picture and best-of-5 contact sheet
(<out>/quality_map.png, <out>/contact_sheet.png).
"""
from __future__ import annotations

from pathlib import Path

PAIRS_SHOWN = 8


def format_effects(effects: dict, images: int) -> str:
    lines = [f"what each defect costs on the {images} fresh images (least squares over all of them; "
             "a defect the model does not see costs it ~0):",
             "| defect | images | MOS | model's score |", "| --- | --- | --- | --- |"]
    for kind, e in effects.items():
        if e["images"]:
            mos, score = (round(e[key], 2) + 0.0 for key in ("mos", "score"))  # + 0.0: no "-0.00"
            lines.append(f"| {kind.replace('_', ' ')} | {e['images']} | {mos:+.2f} | {score:+.2f} |")
    return "\n".join(lines)


def format_pairs(rows: list[dict], accuracy: float, per_kind: dict) -> str:
    lines = ["| image | defects | MOS | own prompt | score | mismatched prompt | score |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows[:PAIRS_SHOWN]:
        lines.append(f"| {r['image']} | {r['defects']} | {r['mos']:.2f} | {r['prompt']} | {r['own']:.2f} | "
                     f"{r['wrong_prompt']} | {r['wrong']:.2f} |")
    aligned = sum("wrong_" not in r["defects"] for r in rows)
    lines.append(f"\nown prompt scored above the mismatched one for {accuracy:.0%} of the {aligned} held-out images "
                 "drawn as their prompt says; by the attribute the mismatched prompt alters: "
                 + ", ".join(f"{kind} {value:.0%}" for kind, value in per_kind.items()))
    return "\n".join(lines)


def preference_demo(args) -> int:
    from ipce.demo.preferences import run_preference_demo
    from ipce.demo.run import QUICK_NOTE
    from ipce.utils.io import write_json

    out = Path(args.out)
    result = run_preference_demo(out, quick=args.quick, workers=args.workers, precision=args.precision,
                                 device=getattr(args, "device", "auto"), progress=not getattr(args, "no_progress", False))
    write_json(out / "preference-summary.json", result, fsync=True)
    print(f"\nheld-out pairwise accuracy {result['pair_accuracy']:.3f} over {result['test_pairs']} ordered pairs of "
          f"prompts never trained on (chance 0.5; the noisy rater follows the MOS order on "
          f"{result['rater_agreement']:.0%}); with ties as half {result['pair_accuracy_ties']:.3f}; Kendall tau "
          f"{result['kendall_tau']:.3f}; in {result['seconds']:.0f} s")
    if result["quick"]:
        print(QUICK_NOTE)
    run_dir = Path(result["run"]) / "split1"
    print(f"the same figure from the model's scores: ipce predict --preferences {run_dir / 'test_preferences.json'} "
          f"--images {out / ('data-quick' if result['quick'] else 'data') / 'images'} --checkpoint "
          f"{run_dir / 'best.safetensors'}")
    return 0


def demo_command(args) -> int:
    from ipce.commands.flags import use_cores
    from ipce.demo.run import QUICK_NOTE, run_demo
    from ipce.utils.io import write_json, write_text

    if getattr(args, "preferences", False):
        return preference_demo(args)
    out = Path(args.out)
    workers = use_cores(args)  # torch threads and loader workers from the cores this process may use
    result = run_demo(out, quick=args.quick, workers=workers, precision=args.precision,
                      device=getattr(args, "device", "auto"), progress=not getattr(args, "no_progress", False))
    summary = result.summary
    run_dir = Path(summary["run"])
    table = format_pairs(result.pairs, summary["pair_accuracy"], summary["pair_accuracy_by_altered"])
    write_json(out / "summary.json", summary, fsync=True)
    effects = format_effects(summary["fresh_effects"], summary["fresh_images"])
    write_text(out / "pairs.md", table + "\n\n" + effects + "\n", fsync=True)
    print(f"\n{table}\n\n{effects}\n")
    print(f"held-out SRCC {summary['srcc']:.3f}  PLCC {summary['plcc']:.3f}  "
          f"pair accuracy {summary['pair_accuracy']:.0%}  in {summary['seconds']:.0f} s")
    print(f"on {summary['fresh_images']} images of a second generated set, which chose nothing: "
          f"SRCC {summary['fresh_srcc']:.3f}  PLCC {summary['fresh_plcc']:.3f}")
    if summary["quick"]:
        print(QUICK_NOTE)
    print(f"plots: {run_dir / 'split1' / 'scatter.png'}, {run_dir / 'split1' / 'learning_curves.png'}")
    print(f"a quality map: {summary['quality_map']}; a best-of-5 contact sheet: {summary['contact_sheet']}")
    best = run_dir / "split1" / "best.safetensors"
    print(f"this model knows only the demo's world (coloured shapes on plain backgrounds), so it scores only such "
          f"pictures, e.g. ipce score {summary['map_image']} --prompt \"{summary['map_prompt']}\" --checkpoint {best}; "
          "for your own images train on real data (ipce train) or score with a zero-shot CLIP (--checkpoint ViT-B-32)")
    return 0
