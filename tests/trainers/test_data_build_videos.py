"""`xmodal data build --videos`: the narrated emoji videos with their own defaults, a finished build reused,
the still-scene-only options refused in one line."""

import json

import pytest
from datasets import load_from_disk

from xmodal.processing import scenes, video_scenes
from xmodal.processing.scene_plan import DEFAULT_IMAGE_SIZE, DEFAULT_SIZES
from xmodal.processing.video_plan import DEFAULT_VIDEO_SIZES
from xmodal.trainers import cli

from .helpers import run_cli

SIZES = {"train": 4, "validation": 2, "test": 2, "test_novel": 2}
TINY = ["--num-proc", "1", "--quiet", *[arg for split, count in SIZES.items()
                                        for arg in (f"--num-{split.replace('_', '-')}", str(count))]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real `xmodal data build --videos` run in a fresh process: (--out, the CompletedProcess)."""
    out = tmp_path_factory.mktemp("videos")
    return out, run_cli("data", "build", "--videos", "--out", out, *TINY, timeout=300)


def build_folder(out):
    (folder,) = [path for path in out.iterdir() if not path.name.startswith(".")]
    return folder


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("xmodal data build: "), err
    return err


def test_builds_the_videos_with_the_asked_sizes(built):
    out, result = built
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    folder = build_folder(out)
    assert folder.name.startswith("video-scenes-") and folder.name.endswith("-4-2-2-2-64px")
    dataset = load_from_disk(str(folder))
    assert {split: len(part) for split, part in dataset.items()} == SIZES
    assert dataset["train"].features == video_scenes.video_features()
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith("train: 4, validation: 2, test: 2, test_novel: 2 clips in ") and str(folder) in line
    rate = json.loads((folder / "build_params.json").read_text())["stats"]["clips_per_second"]
    assert "(built in " in line and f"{rate} clips/s)" in line


def test_a_second_run_reuses_the_build(built, monkeypatch, capsys):
    out, _ = built
    folder = build_folder(out)
    record = (folder / "build_params.json").stat().st_mtime_ns
    monkeypatch.setattr(video_scenes, "_write_splits", lambda *a, **k: pytest.fail("rebuilt a finished build"))
    assert cli.main(["data", "build", "--videos", "--out", str(out), *TINY]) == 0
    line = capsys.readouterr().out.strip()
    assert f"clips in {folder} (reused, built earlier in " in line
    assert build_folder(out) == folder and (folder / "build_params.json").stat().st_mtime_ns == record


def test_the_videos_take_their_builders_defaults(built, monkeypatch, tmp_path, capsys):
    calls = []

    def fake_build(output_dir, **options):
        calls.append((output_dir, options))
        return load_from_disk(str(build_folder(built[0])))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(video_scenes, "build_video_scenes", fake_build)
    assert cli.main(["data", "build", "--videos"]) == 0
    # no size, seed or image size passed on: build_video_scenes' signature holds the video defaults
    assert calls == [("data_cache/video_scenes", {"progress": True})]
    assert cli.main(["data", "build", "--videos", "--seed", "3", "--image-size", "48", "--num-emoji", "5"]) == 0
    assert calls[1] == ("data_cache/video_scenes", {"seed": 3, "image_size": 48, "num_emoji": 5, "progress": True})


@pytest.mark.parametrize("argv, expected", [
    ([], {"out": "data_cache/scenes", "no_speech": False, "audio_format": "wav", "image_size": DEFAULT_IMAGE_SIZE,
          **{f"num_{split}": count for split, count in DEFAULT_SIZES.items()}}),
    (["--no-speech", "--audio-format", "flac", "--num-train", "7", "--out", "elsewhere"],
     {"out": "elsewhere", "no_speech": True, "audio_format": "flac", "num_train": 7}),
])
def test_still_scenes_keep_their_own_defaults(argv, expected, tiny_scenes, monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scenes, "build_from_args", lambda args: seen.append(vars(args)) or tiny_scenes)
    assert cli.main(["data", "build", *argv]) == 0
    assert {key: seen[0][key] for key in expected} == expected
    assert " scenes in " in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--no-speech"], "--videos does not take --no-speech: still scenes only"),
    (["--audio-format", "wav"], "--videos does not take --audio-format"),
    (["--no-speech", "--audio-format", "flac"], "--videos does not take --no-speech or --audio-format"),
    (["--num-emoji", "1"], "test_novel needs at least 2 emoji"),
    (["--image-size", "8"], "image_size must be at least 32 pixels"),
])
def test_mistakes_are_one_line_with_exit_code_2(argv, says, tmp_path, capsys):
    assert cli.main(["data", "build", "--videos", "--out", str(tmp_path / "out"), *TINY, *argv]) == 2
    assert says in one_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_help_mentions_videos_and_their_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "--videos" in text and "data_cache/video_scenes" in text
    assert f"{DEFAULT_VIDEO_SIZES['train']:,} train" in text
