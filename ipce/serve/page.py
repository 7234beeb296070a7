"""The Gradio page of `ipce serve`, mounted at `/` of the API's app: upload images, type the prompt,
see each score, the images ranked (Scorer.rank) and the quality map of a chosen one
(Scorer.explain). Every model call runs on the Batcher's thread; uploads are decoded as the API
decodes them, and a bad one is named in the page's message while the others are scored."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page calls nothing outside the machine

import gradio as gr

from ipce.utils.maps import render_quality_map
from ipce.datasets.sources import generator_of
from ipce.serve.uploads import RequestError, Upload, decode_upload

# system fonts only: the default theme would fetch its font from the web
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
HEADERS = ["rank", "image", "score"]


def _decoded(files) -> tuple[list, list[str], list[str]]:
    """(images, their names, one message per unusable upload) from the page's uploaded files."""
    images, names, problems, seen = [], [], [], set()
    for i, path in enumerate(files or []):
        name = Path(path).name
        if name in seen:  # two files of one name: tell them apart
            name = f"{Path(name).stem} ({i + 1}){Path(name).suffix}"
        seen.add(name)
        try:
            images.append(decode_upload(Upload(Path(path).read_bytes(), name, name)))
            names.append(name)
        except RequestError as exc:
            problems.append(exc.message)
    return images, names, problems


def score_files(batcher, files, prompt) -> tuple:
    """The page's Score button: (message, table rows, gallery, choice update, state, map) for the
    uploaded `files` (paths) and `prompt`. A file that cannot be read is named in the message and
    the others scored (the message says the result is partial); none readable: the message names each."""
    scorer = batcher.scorer
    lo, hi = scorer.scale
    images, names, problems = _decoded(files)
    empty = (gr.update(value=[]), [], gr.update(choices=[], value=None), None, None)
    if not files:
        return ("Upload one or more images.", *empty)
    if scorer.needs_prompt and not (prompt or "").strip():
        return ("Type the prompt the images were generated from.", *empty)
    if not images:
        return ("\n\n".join([f"None of the {len(problems)} image(s) could be read."]
                             + [f"**Not scored:** {p}" for p in problems]), *empty)
    try:
        generators = [generator_of(n) for n in names]  # read only by a '{generator} {prompt}' model
        ranked = batcher.call(lambda: scorer.rank(images, prompt or None, generators)).result()
    except Exception as exc:  # shown, not raised: the page stays usable
        return (f"**Error:** {' '.join(str(exc).split())}", *empty)
    rows = [[r.rank, names[r.index], f"{r.score:.4f}"] for r in ranked]
    gallery = [(r.image, f"{r.rank}. {names[r.index]}: {r.score:.4f}") for r in ranked]
    partial = f" Partial result: {len(problems)} could not be read." if problems else ""
    lines = [f"Scored {len(images)} of {len(images) + len(problems)} image(s) against the prompt, on "
             f"{lo:g}..{hi:g}; best first.{partial}"]
    lines += [f"**Not scored:** {p}" for p in problems]
    best = names[ranked[0].index]
    state = {"images": dict(zip(names, images)), "prompt": prompt}
    return ("\n\n".join(lines), rows, gallery, gr.update(choices=[names[r.index] for r in ranked], value=best),
            state, None)


def build_page(batcher) -> gr.Blocks:
    scorer = batcher.scorer
    lo, hi = scorer.scale

    def score(files, prompt):
        return score_files(batcher, files, prompt)

    def quality_map(choice, state):
        if not state or choice not in state["images"]:
            raise gr.Error("Score the images first, then choose one.")
        image = state["images"][choice]
        try:
            qmap = batcher.call(lambda: scorer.explain(image, state["prompt"] or None, generator=generator_of(choice))).result()
        except Exception as exc:
            raise gr.Error(" ".join(str(exc).split())) from None
        return render_quality_map(image, qmap)

    with gr.Blocks(title="ipce: image-prompt correspondence", analytics_enabled=False) as page:
        gr.Markdown(f"## ipce: how well do the images match their prompt?\nScores on {lo:g}..{hi:g} "
                    f"(higher is better), model {' + '.join(str(m.meta.get('backbone', '?')) for m in scorer.members)}"
                    f" on {scorer.device}. The JSON API: [/docs](/docs).")
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="images")
                prompt = gr.Textbox(label="Prompt", placeholder="the prompt the images were generated from",
                                    elem_id="prompt")
                button = gr.Button("Score", variant="primary", elem_id="score")
                message = gr.Markdown(elem_id="message")
                table = gr.Dataframe(headers=HEADERS, label="Scores, best first", interactive=False,
                                     elem_id="scores")
            with gr.Column():
                gallery = gr.Gallery(label="Ranked, best first", columns=3, height=320, object_fit="contain",
                                     elem_id="ranked")
                choice = gr.Dropdown(label="Quality map of", choices=[], elem_id="choice")
                show = gr.Button("Show quality map", elem_id="show-map")
                # the picture carries its own title (the score) at its top: Gradio's label would cover it
                gr.Markdown("**Quality map**: each 224 px crop's score", elem_id="map-title")
                qmap = gr.Image(show_label=False, type="pil", elem_id="map")
        state = gr.State()
        button.click(score, [files, prompt], [message, table, gallery, choice, state, qmap])
        show.click(quality_map, [choice, state], qmap)
    return page


def mount_page(app, batcher, max_upload_bytes: int) -> None:
    """The page at `/` of `app`, its uploads limited to `max_upload_bytes` each."""
    gr.mount_gradio_app(app, build_page(batcher), path="/", max_file_size=max_upload_bytes, theme=THEME,
                        ssr_mode=False)
