"""The real app (served by `xmodal demo`), called endpoint by endpoint with gradio_client."""

import math
import urllib.request

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from .tiny_demo import GENERATED_WORD, HEARD_WORD

ENDPOINTS = {"/match", "/search_images", "/search_captions", "/transcribe", "/caption", "/explain", "/similarity",
             "/sync"}


def rows(table):
    return table["data"]


def test_every_endpoint_is_public(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ENDPOINTS


def test_match_image_gives_probabilities_and_matching_scores(client, assets, predictor):
    captions = "a big red circle\na small blue square\n\na big red circle\ntwo green triangles"
    plot, table, summary = client.predict("Image", handle_file(assets["image"]), None, captions, api_name="/match")
    expected = predictor.match(captions, image=str(assets["image"]))
    assert [row[0] for row in rows(table)] == ["a big red circle", "a small blue square", "two green triangles"]
    probabilities = [row[1] for row in plot["data"]]
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-6)
    assert probabilities == pytest.approx(expected["probabilities"], abs=1e-5)
    assert [row[2] for row in rows(table)] == pytest.approx(expected["match_scores"], abs=1e-3)
    assert all(0 <= row[2] <= 1 for row in rows(table))
    best = max(rows(table), key=lambda row: row[1])[0]
    assert f"**Best caption:** {best}" in summary and "matching head" in summary


def test_match_speech(client, assets, predictor):
    _, table, _ = client.predict("Speech", None, handle_file(assets["speech"]), "a red circle\na blue square",
                                 api_name="/match")
    expected = predictor.match("a red circle\na blue square", audio=str(assets["speech"]))
    assert [row[1] for row in rows(table)] == pytest.approx(expected["probabilities"], abs=1e-4)
    assert math.isclose(sum(row[1] for row in rows(table)), 1.0, abs_tol=1e-3)


def _check_ranking(scores, k):
    assert len(scores) == k
    assert scores == sorted(scores, reverse=True)


def test_search_images_by_text_over_the_test_split(client, predictor):
    gallery, table = client.predict("Text", "a big red circle", None, 5, None, api_name="/search_images")
    expected = predictor.search_images(text="a big red circle", k=5)
    _check_ranking([row[1] for row in rows(table)], 5)
    assert [row[2] for row in rows(table)] == [label for _, label, _ in expected]
    assert len(gallery) == 5 and all(item["caption"].endswith(row[2]) for item, row in zip(gallery, rows(table)))
    assert Image.open(gallery[0]["image"]).size == (48, 48)


def test_search_images_by_speech_over_uploaded_files(client, assets):
    uploads = [handle_file(path) for path in sorted(assets["gallery"].glob("*.png"))]
    gallery, table = client.predict("Speech", "", handle_file(assets["speech"]), 3, uploads,
                                    api_name="/search_images")
    _check_ranking([row[1] for row in rows(table)], 3)
    names = {path.name for path in assets["gallery"].glob("*.png")}
    assert {row[2] for row in rows(table)} <= names and len(gallery) == 3


def test_search_captions_from_the_test_split_and_from_candidates(client, assets, predictor):
    table = client.predict(handle_file(assets["image"]), 4, "", api_name="/search_captions")
    _check_ranking([row[2] for row in rows(table)], 4)
    assert [row[1] for row in rows(table)] == [c for c, _ in predictor.search_captions(str(assets["image"]), k=4)]
    assert {row[1] for row in rows(table)} <= set(assets["captions"])
    table = client.predict(handle_file(assets["image"]), 5, "one\ntwo\nthree", api_name="/search_captions")
    assert sorted(row[1] for row in rows(table)) == ["one", "three", "two"]  # k is capped by the pool


@pytest.mark.parametrize("beams,length", [(1, 3), (3, 5)])
def test_transcribe_and_caption_follow_the_controls(client, assets, beams, length):
    expected = " ".join([GENERATED_WORD] * length)
    assert client.predict(handle_file(assets["speech"]), beams, length, "decoder", api_name="/transcribe") == expected
    assert client.predict(handle_file(assets["speech"]), beams, length, "ctc", api_name="/transcribe") == HEARD_WORD
    # the reader may be left out: the CTC head, the better of the two, reads by default
    assert client.predict(handle_file(assets["speech"]), beams, length, api_name="/transcribe") == HEARD_WORD
    assert client.predict(handle_file(assets["image"]), beams, length, api_name="/caption") == expected


def test_explain_draws_one_map_per_word(client, assets):
    maps, score = client.predict(handle_file(assets["image"]), "a big red circle", "mean", api_name="/explain")
    assert [item["caption"] for item in maps] == ["[whole caption]", "a", "big", "red", "circle"]
    assert Image.open(maps[1]["image"]).size == (192, 192)
    assert score.startswith("**Matching score:**")
    maps, _ = client.predict(handle_file(assets["image"]), "two reds", "2", api_name="/explain")
    assert [item["caption"] for item in maps] == ["[whole caption]", "two", "reds"]


def test_similarity_matrix_of_a_batch(client):
    heatmap, table = client.predict(4, 7, api_name="/similarity")
    assert table["headers"] == ["caption", "image 1", "image 2", "image 3", "image 4"]
    assert len(rows(table)) == 4 and all(-1 <= v <= 1 for row in rows(table) for v in row[1:])
    width, height = Image.open(heatmap).size
    assert width > 4 * 64 and height == 5 * 64


BAD_INPUTS = [
    ("text file as an image", lambda a: ("Image", handle_file(a["text"]), None, "a cat"), "/match",
     "Could not read notes.txt as an image"),
    ("text file to caption", lambda a: (handle_file(a["text"]), 1, 5), "/caption", "Could not read notes.txt"),
    ("text file to explain", lambda a: (handle_file(a["text"]), "a cat", "mean"), "/explain", "as an image"),
    ("corrupt audio", lambda a: (handle_file(a["corrupt_audio"]), 1, 5), "/transcribe",
     "Could not read corrupt.wav as audio"),
    ("ten-minute recording", lambda a: ("Speech", None, handle_file(a["long_audio"]), "a cat"), "/match",
     "600 s long"),
    ("empty caption list", lambda a: ("Image", handle_file(a["image"]), None, " \n\n "), "/match",
     "Enter at least one caption"),
    ("no query", lambda a: ("Text", "   ", None, 3, None), "/search_images", "Type a query first"),
    ("k out of range", lambda a: ("Text", "a cat", None, 50, None), "/search_images", "k must be between 1 and 20"),
    ("beam size out of range", lambda a: (handle_file(a["image"]), 40, 5), "/caption", "Beam size must be"),
]


@pytest.mark.parametrize("name,arguments,endpoint,message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_inputs_give_a_useful_error_and_the_app_stays_up(client, assets, name, arguments, endpoint, message):
    with pytest.raises(AppError, match=message):
        client.predict(*arguments(assets), api_name=endpoint)
    still_up = client.predict(handle_file(assets["image"]), 1, 2, api_name="/caption")
    assert still_up == f"{GENERATED_WORD} {GENERATED_WORD}"


def test_uploads_over_the_size_limit_are_refused(client, server, assets):
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(assets["too_big"]), 1, 2, api_name="/caption")
    assert server["process"].poll() is None
    with urllib.request.urlopen(server["url"], timeout=10) as response:
        assert response.status == 200


def test_the_server_binds_loopback_and_reaches_nothing_outside(client, server, assets):
    client.predict(handle_file(assets["image"]), 1, 2, api_name="/caption")
    outbound = server["outbound_log"].read_text() if server["outbound_log"].exists() else ""
    assert outbound == "", f"the demo tried to reach the network:\n{outbound}"
    assert "Running on local URL:  http://127.0.0.1:" in server["log"].read_text()


def test_sync_finds_a_picture_in_a_video_and_the_sounds_offset(client, assets):
    from xmodal.trainers.demo.sync import VideoSync

    plot, frame, summary = client.predict(handle_file(assets["video"]), handle_file(assets["square_frame"]), "",
                                          api_name="/sync")
    expected = VideoSync(assets["video_model"]).locate(str(assets["video"]), image=str(assets["square_frame"]))
    assert [row[0] for row in plot["data"]] == pytest.approx([0.25 * i for i in range(12)])  # 3 s at 4 fps
    assert [row[1] for row in plot["data"]] == pytest.approx(expected["scores"], abs=1e-5)
    assert f"**Best moment:** {expected['best_time']:.2f} s" in summary
    assert Image.open(frame).size == (64, 64)  # the video's own frame, not the model's 32 px input
    assert "**Sound:**" in summary and "no sound track" not in summary
    _, _, silent = client.predict(handle_file(assets["silent_video"]), None, "a red square moves right",
                                  api_name="/sync")
    assert "no sound track" in silent and "**Span:**" in silent


@pytest.mark.parametrize("video, image, text, message", [
    ("video", "square_frame", "a red square", "either a picture or a sentence"),
    ("video", None, "", "either a picture or a sentence"),
    ("text", None, "a red square", "notes.txt"),
])
def test_sync_bad_inputs_say_what_is_wrong(client, assets, video, image, text, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(assets[video]), handle_file(assets[image]) if image else None, text,
                       api_name="/sync")
