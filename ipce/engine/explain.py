"""Quality maps of image files: for each, `Scorer.explain`, a PNG of the map over the image and a
CSV of the grid; an unreadable image is reported and the others go on."""
from __future__ import annotations

from pathlib import Path

from ipce.errors import DataError


def output_stems(images: list[Path]) -> list[str]:
    """A distinct file stem per image: its own, with -2, -3, ... where two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for image in images:
        stem = Path(image).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def explain_images(scorer, images, prompt: str | None, out: Path, stride: int | None = None,
                   progress: bool = True) -> tuple[list[tuple[Path, object, Path, Path]], list[tuple[Path, str]]]:
    """([(image, QualityMap, png, csv)], [(image, problem)]) for `images`, written under `out`."""
    from ipce.datasets.images import open_rgb
    from ipce.datasets.sources import generator_of
    from ipce.utils.io import atomic_file, write_csv
    from ipce.utils.maps import render_quality_map

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done, errors = [], []
    for image, stem in zip(images, output_stems(images)):
        try:
            pil = open_rgb(image)
        except DataError as exc:
            errors.append((Path(image), str(exc)))
            continue
        qmap = scorer.explain(pil, prompt, stride=stride, progress=progress, generator=generator_of(str(image)))
        png, table = out / f"{stem}.png", out / f"{stem}.csv"
        write_csv(table, ["x", "y", "size", "score"], qmap.rows())
        drawn = render_quality_map(pil, qmap)
        with atomic_file(png) as tmp:
            drawn.save(tmp, format="PNG")
        done.append((Path(image), qmap, png, table))
    return done, errors
