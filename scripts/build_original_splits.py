"""Build ipce's package data of the original splits, ipce/presets/splits/<preset>.json.xz, from the
original authors' split folders (their repository's Database/<folder>/<k>/train.csv, val.csv).

    python scripts/build_original_splits.py DATABASE_DIR [--out ipce/presets/splits]

Each file keeps what identifies the splits: the image names of every row of every split file, in
file order, and the score of a row only where one image is listed with two scores (AGIQA-1K's
dreamStudio_8_9_1_1.jpg), so that its rows resolve to the right record (ipce.datasets.splits).
"""
from __future__ import annotations

import argparse
import csv
import json
import lzma
from pathlib import Path

# preset -> (folder under Database/, header rows, name columns, score column)
SOURCES = {
    "agiqa1k": ("AGIQA-1K", 1, (0,), 2),
    "agiqa3k": ("AGIQA-3K", 1, (0,), 5),
    "aigciqa2023": ("AIGCIQA2023", 1, (0, 1), 2),
    "aigcqa30k": ("AIGC", 0, (0,), 2),
}


def read_rows(path: Path, header: int, name_columns, score_column) -> list[tuple[str, float]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row][header:]
    return [("/".join(row[c] for c in name_columns), float(row[score_column])) for row in rows]


def build(database: Path, preset: str) -> dict:
    folder, header, name_columns, score_column = SOURCES[preset]
    root = database / folder
    numbers = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    files = {(k, side): read_rows(root / str(k) / f"{side}.csv", header, name_columns, score_column)
             for k in numbers for side in ("train", "val")}
    # two scores of one name that differ beyond float formatting mean two rows of the dataset
    scores: dict[str, dict[float, float]] = {}
    for rows in files.values():
        for name, score in rows:
            scores.setdefault(name, {}).setdefault(round(score, 6), score)

    def key(name: str, score: float) -> tuple[str, float | None]:
        """A row's identity: its name, plus its score (as first written) where the name has several."""
        found = scores[name]
        return (name, found[round(score, 6)]) if len(found) > 1 else (name, None)

    keys = sorted({key(*row) for rows in files.values() for row in rows}, key=lambda k: (k[0], k[1] or 0.0))
    index = {k: i for i, k in enumerate(keys)}

    def indices(rows):
        return [index[key(*row)] for row in rows]

    return {"preset": preset, "folder": folder,
            "rows": [[name] if score is None else [name, score] for name, score in keys],
            "splits": [{"number": k, "train": indices(files[k, "train"]), "val": indices(files[k, "val"])}
                       for k in numbers]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database", type=Path, help="the folder holding AGIQA-1K/, AGIQA-3K/, AIGCIQA2023/, AIGC/")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "ipce/presets/splits")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for preset in SOURCES:
        data = json.dumps(build(args.database, preset), separators=(",", ":")).encode()
        path = args.out / f"{preset}.json.xz"
        path.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
