"""xmodal demo: match, search, transcribe, caption and explain with one cross-modal checkpoint.

Layout and wiring only; the inference is `xmodal.trainers.demo.predictor`. Runs as a Hugging Face
Space (`python app.py`) or locally with `xmodal demo --model DIR`. Environment variables, each
defaulting to the folder of that name beside this file when it exists (as in a Space):
XMODAL_MODEL (checkpoint folder, `model/`; else `runs/default/model`), XMODAL_GALLERY (images to
search, `gallery/`), XMODAL_DATA (the built-in data, `data/`; else where the checkpoint's training
config says), XMODAL_VIDEO_MODEL (a `task: video` checkpoint for the Sync tab, `video_model/`), and
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).
"""

import os
import sys

# Offline unless told otherwise: without these, Gradio and the hub client reach out at start.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

import atexit  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

MAX_UPLOAD = "10mb"
CONCURRENCY_LIMIT = 2  # requests computed at once (the rest wait in the queue); a CPU has few cores
QUEUE_SIZE = 64
HERE = Path(__file__).resolve().parent
if (HERE / "vendor").is_dir():  # a Space carries xmodal itself in vendor/ (see README.md)
    sys.path.insert(0, str(HERE / "vendor"))


class ImageFiles:
    """Output images as PNG files, one per distinct picture, each written once and atomically.

    Gradio saves a returned PIL image into its cache by rewriting the file in place, so two requests
    that return the same picture (a popular search result) race, and a download can get a torn file.
    A returned path is instead copied into the cache atomically, and only once.
    """

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="xmodal-demo-outputs-"))
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)

    def __call__(self, image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha1(data).hexdigest()}.png"
        if not path.exists():
            staging = path.with_name(f".{path.name}.{threading.get_ident()}")
            staging.write_bytes(data)
            os.replace(staging, path)
        return str(path)


def image_input(label, elem_id):
    return gr.Image(label=label, type="filepath", sources=["upload", "clipboard"], height=240, elem_id=elem_id)


def audio_input(label, elem_id, visible=True):
    return gr.Audio(label=label, type="filepath", sources=["upload", "microphone"], visible=visible, elem_id=elem_id)


def user_errors(fn):
    """Runs an event handler on raw inputs: uploads arrive as their files' paths, undecoded, so that a
    bad one (a text file as an image) reaches the predictor's checks, whose `DemoInputError` is shown
    as a gr.Error message; the app stays up. (Gradio's own decoding fails with a developer's message.)"""
    from xmodal.trainers.demo.inputs import DemoInputError

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*(_upload_paths(value) for value in args))
        except DemoInputError as error:
            raise gr.Error(str(error)) from error

    return wrapper


def _upload_paths(value):
    """A raw file payload ({"path": ...}, a video's {"video": {"path": ...}}, or a list of them) as a path (or a
    list of paths)."""
    if isinstance(value, dict) and isinstance(value.get("video"), dict):
        value = value["video"]
    if isinstance(value, dict) and "path" in value:
        return value["path"]
    if isinstance(value, list) and value and all(isinstance(v, dict) and "path" in v for v in value):
        return [v["path"] for v in value]
    return value


def build_demo(predictor) -> gr.Blocks:
    info = predictor.model_info()
    examples = predictor.examples()
    as_file = ImageFiles()
    has_audio, has_image = "audio" in predictor.modalities, "image" in predictor.modalities
    with gr.Blocks(title="xmodal demo", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# xmodal: text, images and speech in one model\nCheckpoint: `{info['model_dir']}`")
        with gr.Tabs():
            with gr.Tab("Match", id="match"):
                _match_tab(predictor, examples, has_audio)
            with gr.Tab("Search", id="search"):
                _search_tab(predictor, examples, has_audio, as_file)
            with gr.Tab("Transcribe and caption", id="generate"):
                _generation_tab(predictor, examples, has_audio, has_image)
            with gr.Tab("Explain", id="explain"):
                _explain_tab(predictor, examples, as_file)
            if predictor.sync is not None:
                with gr.Tab("Sync", id="sync"):
                    _sync_tab(predictor.sync, as_file)
            with gr.Tab("Model", id="model"):
                _model_tab(info)
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)


def _toggle(choice, first):
    """Show the first of two inputs when `choice == first`, else the second."""
    return gr.update(visible=choice == first), gr.update(visible=choice != first)


# ---------------------------------------------------------------------------- tab 1
def _match_tab(predictor, examples, has_audio):
    gr.Markdown("Give an image (or a spoken clip) and candidate captions: the bars are the contrastive "
                "probabilities over the captions; the matching head scores each pair on its own.")
    with gr.Row():
        with gr.Column():
            source = gr.Radio(["Image", "Speech"] if has_audio else ["Image"], value="Image",
                              label="Compare the captions with")
            image = image_input("Image", "match-image")
            audio = audio_input("Spoken clip", "match-audio", visible=False)
            captions = gr.Textbox(label="Candidate captions, one per line", lines=5, elem_id="match-captions",
                                  placeholder="a big dog to the left of a cat\ntwo bananas\na small star")
            button = gr.Button("Match", variant="primary", elem_id="match-button")
        with gr.Column():
            plot = gr.BarPlot(x="caption", y="probability", y_lim=[0, 1], sort="-y", x_label_angle=25,
                              label="Contrastive probability", height=300, elem_id="match-plot")
            table = gr.Dataframe(headers=["caption", "probability", "match score"], label="Scores",
                                 interactive=False, wrap=True, column_widths=["60%", "20%", "20%"],
                                 elem_id="match-table")
            summary = gr.Markdown(label="Summary", elem_id="match-summary")
    source.change(functools.partial(_toggle, first="Image"), source, [image, audio], api_visibility="private")

    @user_errors
    def run(choice, image_path, audio_path, text):
        result = predictor.match(text, image=image_path if choice == "Image" else None,
                                 audio=audio_path if choice == "Speech" else None)
        scores = result["match_scores"] or [None] * len(result["captions"])
        frame = pd.DataFrame({"caption": result["captions"], "probability": result["probabilities"]})
        rows = pd.DataFrame({"caption": result["captions"], "probability": [round(p, 4) for p in frame.probability],
                             "match score": [None if s is None else round(s, 4) for s in scores]})
        best = int(frame.probability.idxmax())
        line = f"**Best caption:** {result['captions'][best]} (p = {result['probabilities'][best]:.3f})"
        if result["match_scores"] is not None:
            line += f"; matching head: {result['match_scores'][best]:.3f}"
        return frame, rows, line

    button.click(run, [source, image, audio, captions], [plot, table, summary], api_name="match", preprocess=False)
    if examples:
        gr.Examples([[e["image"], "\n".join([e["caption"], *e["distractors"]])] for e in examples],
                    [image, captions], label="Examples from the test split")


# ---------------------------------------------------------------------------- tab 2
def _gallery_has_audio(folder):
    from xmodal.trainers.demo.gallery_index import gallery_files

    return Path(folder).is_dir() and bool(gallery_files(folder)["audio"])


def _speech_search(predictor):
    """Text -> the speech clips of the `--gallery` folder (its saved index)."""
    gr.Markdown(f"### Text → speech clips\nSearches the audio files in `{Path(predictor.gallery_dir).name}/`.")
    with gr.Row():
        query = gr.Textbox(label="Query", placeholder="a small cat above a banana", elem_id="speech-query")
        k = gr.Slider(1, predictor.limits.max_top_k, value=5, step=1, label="k (results)")
        button = gr.Button("Search speech", elem_id="speech-button")
    table = gr.Dataframe(headers=["rank", "score", "clip"], label="Speech clips", interactive=False,
                         elem_id="speech-table")

    @user_errors
    def run_speech(text, count):
        hits = predictor.search_speech(text=text, k=count)
        return pd.DataFrame({"rank": range(1, len(hits) + 1), "score": [round(s, 4) for _, s in hits],
                             "clip": [name for name, _ in hits]})

    button.click(run_speech, [query, k], [table], api_name="search_speech")


def _search_tab(predictor, examples, has_audio, as_file):
    gallery_name = (f"the images in `{Path(predictor.gallery_dir).name}/`" if predictor.gallery_dir
                    else f"the {predictor.split} split")
    gr.Markdown(f"### Text or speech → images\nSearches {gallery_name}, or the images you upload below.")
    with gr.Row():
        with gr.Column():
            source = gr.Radio(["Text", "Speech"] if has_audio else ["Text"], value="Text", label="Query by")
            text = gr.Textbox(label="Query", placeholder="a small cat above a banana", elem_id="search-query")
            audio = audio_input("Spoken query", "search-audio", visible=False)
            k = gr.Slider(1, predictor.limits.max_top_k, value=6, step=1, label="k (results)")
            files = gr.File(label="Your own gallery (optional): select image files", file_count="multiple",
                            file_types=["image"], elem_id="search-files")
            button = gr.Button("Search images", variant="primary", elem_id="search-button")
        with gr.Column():
            gallery = gr.Gallery(label="Top k images", columns=3, format="png", object_fit="contain", height=360,
                                 elem_id="search-gallery")
            table = gr.Dataframe(headers=["rank", "score", "image"], label="Scores", interactive=False,
                                 elem_id="search-table")
    source.change(functools.partial(_toggle, first="Text"), source, [text, audio], api_visibility="private")

    @user_errors
    def run_images(choice, query, audio_path, count, uploads):
        results = predictor.search_images(text=query if choice == "Text" else None,
                                          audio=audio_path if choice == "Speech" else None, k=count,
                                          files=uploads or None)
        items = [(as_file(image), f"{score:.3f} · {label}") for image, label, score in results]
        rows = pd.DataFrame({"rank": range(1, len(results) + 1), "score": [round(s, 4) for _, _, s in results],
                             "image": [label for _, label, _ in results]})
        return items, rows

    button.click(run_images, [source, text, audio, k, files], [gallery, table], api_name="search_images",
                 preprocess=False)
    if examples:
        gr.Examples([[e["caption"]] for e in examples], [text], label="Example queries")
    if predictor.gallery_dir and has_audio and _gallery_has_audio(predictor.gallery_dir):
        _speech_search(predictor)

    gr.Markdown("### Image → captions\nLeave the candidates empty to search the captions of the "
                f"{predictor.split} split.")
    with gr.Row():
        with gr.Column():
            image = image_input("Image", "captions-image")
            caption_k = gr.Slider(1, predictor.limits.max_top_k, value=5, step=1, label="k (results)")
            pool = gr.Textbox(label="Candidate captions (optional), one per line", lines=3)
            caption_button = gr.Button("Search captions", variant="primary", elem_id="captions-button")
        with gr.Column():
            captions = gr.Dataframe(headers=["rank", "caption", "score"], label="Top k captions", interactive=False,
                                    elem_id="captions-table")

    @user_errors
    def run_captions(image_path, count, candidates):
        results = predictor.search_captions(image_path, k=count, captions=candidates or None)
        return pd.DataFrame({"rank": range(1, len(results) + 1), "caption": [c for c, _ in results],
                             "score": [round(s, 4) for _, s in results]})

    caption_button.click(run_captions, [image, caption_k, pool], captions, api_name="search_captions",
                         preprocess=False)
    if examples:
        gr.Examples([[e["image"]] for e in examples], [image], label="Example images")


# ---------------------------------------------------------------------------- tab 3
def _generation_tab(predictor, examples, has_audio, has_image):
    if predictor.generator is None and not predictor.readers:
        gr.Markdown("This checkpoint has no text decoder, so it cannot transcribe or caption.")
        return
    from xmodal.trainers.demo.predictor import READERS

    with gr.Row():
        beams = gr.Slider(1, predictor.limits.max_beams, value=3, step=1, label="Beam size")
        length = gr.Slider(1, predictor.max_new_tokens, value=min(24, predictor.max_new_tokens), step=1,
                           label="Max length (tokens)")
    with gr.Row():
        with gr.Column(visible=has_audio):
            audio = audio_input("Speech", "transcribe-audio")
            readers = predictor.readers or ["decoder"]
            reader = gr.Radio([(READERS[name], name) for name in readers], value=readers[0], label="Read with",
                              elem_id="transcribe-reader", visible=len(readers) > 1)
            transcribe_button = gr.Button("Transcribe", variant="primary", elem_id="transcribe-button")
            transcript = gr.Textbox(label="Transcript", interactive=False, elem_id="transcript")
        with gr.Column(visible=has_image):
            image = image_input("Image", "caption-image")
            caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption-output")
    transcribe_button.click(user_errors(predictor.transcribe), [audio, beams, length, reader], transcript,
                            api_name="transcribe", preprocess=False)
    caption_button.click(user_errors(predictor.caption), [image, beams, length], caption, api_name="caption",
                         preprocess=False)
    if examples:
        with gr.Row():
            if examples[0]["audio"]:
                gr.Examples([[e["audio"]] for e in examples], [audio], label="Example clips")
            gr.Examples([[e["image"]] for e in examples], [image], label="Example images")


# ---------------------------------------------------------------------------- tab 4
def _explain_tab(predictor, examples, as_file):
    layers = predictor.config.fusion_num_layers
    gr.Markdown("### Where each word looks\nThe matching head's cross-attention from every caption word to "
                "the image patches (heads averaged), drawn as a heat map: bright = more attention.")
    with gr.Row():
        with gr.Column():
            image = image_input("Image", "explain-image")
            caption = gr.Textbox(label="Caption", placeholder="a big dog to the left of a cat",
                                 elem_id="explain-caption")
            layer = gr.Dropdown(["mean"] + [str(i) for i in range(1, layers + 1)], value="mean",
                                label="Fusion layer (mean = all layers)")
            button = gr.Button("Explain", variant="primary", elem_id="explain-button")
        with gr.Column():
            maps = gr.Gallery(label="Attention per word", columns=4, format="png", height=360, elem_id="explain-maps")
            score = gr.Markdown(label="Matching score", elem_id="explain-score")

    @user_errors
    def run_explain(image_path, text, chosen_layer):
        result = predictor.explain(image_path, text, layer=chosen_layer)
        maps = [(as_file(image), word) for image, word in result["maps"]]
        return maps, f"**Matching score:** {result['match_score']:.3f}"

    button.click(run_explain, [image, caption, layer], [maps, score], api_name="explain", preprocess=False)
    if examples:
        gr.Examples([[e["image"], e["caption"]] for e in examples], [image, caption], label="Examples")

    gr.Markdown("### Similarity of a batch\nCosine similarity of test-split captions (rows) and images "
                "(columns): a good model is brightest on the diagonal.")
    with gr.Row():
        with gr.Column(scale=1):
            count = gr.Slider(2, predictor.limits.max_batch, value=6, step=1, label="Batch size")
            seed = gr.Number(value=0, precision=0, label="Seed (which samples)")
            similarity_button = gr.Button("Compute similarity", variant="primary", elem_id="similarity-button")
        with gr.Column(scale=2):
            heatmap = gr.Image(label="Caption × image similarity", format="png", interactive=False,
                               elem_id="similarity-heatmap")
            matrix = gr.Dataframe(label="Values", interactive=False, elem_id="similarity-table")

    @user_errors
    def run_similarity(size, chosen_seed):
        result = predictor.similarity(size, 0 if chosen_seed is None else chosen_seed)
        columns = [f"image {j + 1}" for j in range(len(result["images"]))]
        frame = pd.DataFrame(result["matrix"].astype(float).round(4), columns=columns)
        frame.insert(0, "caption", result["captions"])
        return as_file(result["heatmap"]), frame

    similarity_button.click(run_similarity, [count, seed], [heatmap, matrix], api_name="similarity",
                             preprocess=False)


# ---------------------------------------------------------------------------- tab 5 (video checkpoints)
def _sync_tab(sync, as_file):
    gr.Markdown(f"### Where does it belong?\nUpload a video and a picture or a sentence: the plot is their similarity "
                f"to each frame over time ({sync.fps:g} frames per second, the first {sync.seconds:g} s), with the "
                "best moment's frame and time. For a video with sound, the model also says by how much the sound "
                "is off.")
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Video", sources=["upload"], height=240, elem_id="sync-video")
            image = image_input("Picture (or give a sentence)", "sync-image")
            sentence = gr.Textbox(label="Sentence", placeholder="a dog enters from the left", elem_id="sync-sentence")
            button = gr.Button("Find the moment", variant="primary", elem_id="sync-button")
        with gr.Column():
            plot = gr.LinePlot(x="time (s)", y="similarity", label="Similarity over time", elem_id="sync-plot")
            frame = gr.Image(label="Best moment", format="png", interactive=False, height=200, elem_id="sync-frame")
            summary = gr.Markdown(elem_id="sync-summary")

    @user_errors
    def run(video_path, image_path, text):
        result = sync.locate(video_path, image=image_path or None, text=text)
        lines = [f"**Best moment:** {result['best_time']:.2f} s (the {result['kind']}'s best frame)"]
        if result["segment"] is not None:
            lines.append(f"**Span:** {result['segment'][0]:.2f}–{result['segment'][1]:.2f} s")
        if result["offset_frames"] is None:
            lines.append("**Sound:** this video has no sound track.")
        elif result["offset_frames"] == 0:
            lines.append("**Sound:** in sync (within one frame).")
        else:
            way = "late" if result["offset_frames"] > 0 else "early"
            lines.append(f"**Sound:** {abs(result['offset_seconds']):.2f} s {way} "
                         f"({abs(result['offset_frames'])} frame(s)).")
        points = pd.DataFrame({"time (s)": result["times"], "similarity": result["scores"]})
        return points, as_file(result["best_frame"]), "\n\n".join(lines)

    button.click(run, [video, image, sentence], [plot, frame, summary], api_name="sync", preprocess=False)


# ---------------------------------------------------------------------------- tab 6
def _model_tab(info):
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(info["card"], elem_id="model-card")
        with gr.Column(scale=2):
            metrics = [(name, round(value, 4)) for name, value in info["metrics"].items()]
            gr.Dataframe(pd.DataFrame(metrics or [("(no metrics.json in the checkpoint)", None)],
                         columns=["metric", "value"]), label="Metrics", interactive=False, elem_id="metrics")
            gr.Dataframe(pd.DataFrame([(part, f"{count:,}") for part, count in info["parameters"].items()],
                                      columns=["part", "parameters"]), label="Parameter counts",
                         interactive=False, elem_id="parameter-counts")
            if info["curve"]:
                gr.Image(info["curve"], label="Training curve", interactive=False)
    gr.Markdown("### Data credits\n" + info["data_credits"], elem_id="data-credits")
    with gr.Accordion("Model configuration (config.json)", open=False):
        gr.JSON(info["config"])


# ---------------------------------------------------------------------------- running it
def _beside_app(variable, folder, fallback=None):
    """`$variable`, else the folder beside this file (a Space) when it exists, else `fallback`."""
    if os.environ.get(variable):
        return os.environ[variable]
    return str(HERE / folder) if (HERE / folder).is_dir() else fallback


def default_model_dir():
    """`$XMODAL_MODEL`, else `model/` beside this file, else the default training run's output."""
    from xmodal.trainers.demo.predictor import DEFAULT_MODEL_DIR

    return _beside_app("XMODAL_MODEL", "model", DEFAULT_MODEL_DIR)


def load(model_dir=None, gallery_dir=None, data_path=None, video_model_dir=None):
    """A Predictor for the checkpoint (and the Sync tab's video checkpoint, when there is one); the search
    gallery is embedded in the background."""
    import torch
    from xmodal.trainers.demo.predictor import Predictor

    # The cores are shared by the requests computed at once: with more threads than that, small
    # operations spend their time waiting on each other (25x slower for the test model on 2 cores).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // CONCURRENCY_LIMIT))
    predictor = Predictor(model_dir or default_model_dir(),
                          gallery_dir=gallery_dir or _beside_app("XMODAL_GALLERY", "gallery"),
                          data_path=data_path or _beside_app("XMODAL_DATA", "data"),
                          video_model_dir=video_model_dir or _beside_app("XMODAL_VIDEO_MODEL", "video_model"))
    threading.Thread(target=predictor.warm_up, daemon=True).start()
    return predictor


def launch_options(host=None, port=None, share=False):
    """`launch()` arguments: loopback unless told (GRADIO_SERVER_NAME), an upload limit, no share link."""
    return {"server_name": host, "server_port": port, "share": share, "max_file_size": MAX_UPLOAD}


if __name__ == "__main__":
    build_demo(load()).launch(**launch_options())
