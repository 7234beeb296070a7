"""Pretrained CLIP weight files: which ones ipce knows, where it looks for them, and an explicit fetch.

ipce never downloads on its own. `ipce weights fetch NAME` is the one place that does: it
downloads OpenAI's file from the address `clip.load` uses into `~/.cache/clip/` (where
`clip.load` caches it too), resumes a partial `.part` file with an HTTP range request, and
checks the SHA-256 that OpenAI's address carries before the file takes its final name.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ipce.errors import WeightsError

__all__ = ["WeightFile", "OPENAI_WEIGHTS", "weight_dirs", "candidates", "locate", "fetch", "cache_dir"]

_OPENAI = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class WeightFile:
    name: str      # the open_clip model name ipce builds
    file: str      # the file name clip.load caches it as
    sha256: str    # the digest in OpenAI's address

    @property
    def url(self) -> str:
        return f"{_OPENAI}/{self.sha256}/{self.file}"


OPENAI_WEIGHTS: dict[str, WeightFile] = {w.name: w for w in (
    WeightFile("RN50", "RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
    WeightFile("RN101", "RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
    WeightFile("RN50x4", "RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
    WeightFile("RN50x16", "RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
    WeightFile("RN50x64", "RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
    WeightFile("ViT-B-32", "ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    WeightFile("ViT-B-16", "ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    WeightFile("ViT-L-14", "ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    WeightFile("ViT-L-14-336", "ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
)}

CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where `clip.load` caches OpenAI's files, and where `fetch` puts them."""
    return Path.home() / ".cache" / "clip"


def weight_dirs() -> list[Path]:
    """Folders searched for a backbone's weight file, in order."""
    dirs = [Path(os.environ["IPCE_WEIGHTS"])] if os.environ.get("IPCE_WEIGHTS") else []
    return [*dirs, Path("weights"), cache_dir(), Path.home() / ".cache" / "ipce"]


def _file_names(name: str) -> list[str]:
    known = OPENAI_WEIGHTS.get(name)
    return [known.file if known else f"{name}.pt", f"{name}.safetensors", f"{name}.bin"]


def candidates(name: str) -> list[Path]:
    """Every path looked at for `name`, in search order."""
    return [folder / file for folder in weight_dirs() for file in _file_names(name)]


def locate(name: str) -> Path | None:
    """The first weight file of `name` that exists, or None."""
    return next((path for path in candidates(name) if path.is_file()), None)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (an https/http address we build)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is already whole (or longer): check it as it is
            return None
        raise WeightsError(f"{url}: download refused (HTTP {err.code} {err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        raise WeightsError(f"{url}: cannot download ({getattr(err, 'reason', err)}); check the network "
                           "or download the file by hand and pass --weights FILE") from None


def fetch(name: str, folder: Path | None = None, url: str | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download OpenAI's weight file of `name` into `folder` (default ~/.cache/clip/) and return its path.
    A `<file>.part` left by an interrupted download is resumed; the SHA-256 is checked before the file
    is renamed to its final name, and a file that does not match is removed and refused."""
    from ipce.utils.progress import progress_bar

    known = OPENAI_WEIGHTS.get(name)
    if known is None:
        raise WeightsError(f"ipce weights fetch {name}: no known download; choose one of {', '.join(OPENAI_WEIGHTS)}")
    folder = Path(folder) if folder else cache_dir()
    target = folder / known.file
    if target.is_file() and _sha256(target) == known.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    address = url or known.url
    response = _open(address, start, timeout)
    if response is not None:
        with response:
            if start and response.status != 206:  # the server ignored the range: start again
                start = 0
            total = response.length + start if response.length is not None else None
            with part.open("ab" if start else "wb") as out, progress_bar(
                    total=total, initial=start, unit="B", unit_scale=True, desc=known.file, enabled=progress) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                except (OSError, http.client.HTTPException) as err:  # a dropped connection: keep what came
                    raise WeightsError(f"{address}: download interrupted after {out.tell()} bytes ({err!r}); "
                                       f"run the same command again to resume {part}") from None
            if total is not None and part.stat().st_size < total:
                raise WeightsError(f"{address}: download ended early ({part.stat().st_size} of {total} bytes); "
                                   f"run the same command again to resume {part}")
    found = _sha256(part)
    if found != known.sha256:
        part.unlink()
        raise WeightsError(f"{address}: the downloaded file's SHA-256 is {found}, not {known.sha256}; "
                           "it was removed, run the command again")
    os.replace(part, target)
    return target
