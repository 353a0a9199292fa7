"""`xmodal push --model DIR --repo-id NAME` and `training.push_to_hub`: a checkpoint folder to the Hub.

The upload is `huggingface_hub.HfApi.upload_folder` on the files of the upload plan: every file of the
folder `xmodal train` writes (weights, config, generation config, processor files, the model's and the
processor's code, card, metrics, curve) except hidden and temporary files and training states. The plan
is printed first (`--dry-run` prints only it). Without the network, or with `HF_HUB_OFFLINE=1`, the
command says so in one line and nothing is changed locally.
"""

import fnmatch
from dataclasses import dataclass
from pathlib import Path

# Never uploaded: hidden files (staging folders, temporary files, a gallery index) and training states.
IGNORED = (".*", "*/.*", "checkpoints/*", "*.tmp-*", "__pycache__/*", "*/__pycache__/*")
# Stored with Git LFS on the Hub (binary), whatever their size; other files above 10 MB go there too.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".png", ".jpg", ".wav", ".faiss", ".model")
LFS_ABOVE = 10 * 2**20


class PushError(RuntimeError):
    """The checkpoint could not be pushed; the message says why and what to do."""


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the model folder, with "/"
    size: int
    lfs: bool


def upload_plan(model_dir):
    """The files `push` uploads, sorted by path."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise PushError(f"No model at {model_dir}: it has no config.json (push the folder `xmodal train` writes, "
                        "e.g. runs/default/model).")
    planned = []
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir).as_posix()
        if not path.is_file() or any(fnmatch.fnmatch(relative, pattern) for pattern in IGNORED):
            continue
        size = path.stat().st_size
        planned.append(PlannedFile(relative, size, path.suffix in LFS_SUFFIXES or size > LFS_ABOVE))
    if not any(f.path.endswith(".safetensors") for f in planned):
        raise PushError(f"No weights in {model_dir}: no *.safetensors file to push.")
    return planned


def describe_plan(plan, repo_id):
    total = sum(f.size for f in plan)
    lines = [f"Upload plan for {repo_id}: {len(plan)} files, {total / 2**20:.1f} MiB"]
    lines += [f"  {f.path}  ({f.size:,} bytes{', LFS' if f.lfs else ''})" for f in plan]
    return "\n".join(lines)


def push_to_hub(model_dir, repo_id, private=False, revision=None, commit_message=None, token=None,
                dry_run=False, log=print):
    """Uploads the upload plan of `model_dir` to the model repository `repo_id` (created if need be);
    returns the plan, and the commit URL when uploaded."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise PushError(f"--repo-id {repo_id!r}: expected NAME or OWNER/NAME.")
    plan = upload_plan(model_dir)
    log(describe_plan(plan, repo_id))
    if dry_run:
        return plan, None
    if constants.HF_HUB_OFFLINE:
        raise PushError("The Hub is offline here (HF_HUB_OFFLINE is set): nothing was uploaded. Unset it on a "
                        "machine with network access, or use --dry-run to see the upload plan.")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(model_dir), repo_id=repo.repo_id, repo_type="model",
                                   revision=revision, allow_patterns=[f.path for f in plan],
                                   commit_message=commit_message or f"Upload {Path(model_dir).name} with xmodal")
    except (OSError, HfHubHTTPError) as error:
        raise PushError(_reason(error, constants.ENDPOINT, repo_id)) from None
    except Exception as error:  # the HTTP client's own transport errors (httpx): no connection at all
        if type(error).__module__.split(".")[0] not in ("httpx", "httpx2", "requests", "urllib3"):
            raise
        raise PushError(_reason(error, constants.ENDPOINT, repo_id)) from None
    return plan, getattr(commit, "commit_url", str(commit))


def _reason(error, endpoint, repo_id):
    text = " ".join(str(error).split())[:300] or type(error).__name__
    hint = ("log in with `hf auth login` or set HF_TOKEN" if "token" in text.lower() or "401" in text
            else "check the network and the repository name")
    return f"Could not push to {endpoint}/{repo_id}: {text}. Nothing was changed locally; {hint}."
