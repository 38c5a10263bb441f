"""Share a model folder on the Hub: `hf-vit push` and `push_model`.

One commit carries the weights (safetensors), config.json with auto_map, the two remote-code files, the image
processor settings, the model card and its pictures. The local folder is only read, never written, so a failed push
loses nothing and the same command can simply be run again. Tokens come from huggingface_hub's standard places
(`HF_TOKEN`, `hf auth login`); hf_vit never prints, logs or stores them.
"""

import fnmatch
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, constants

from .cli_args import CommandParser
from .model_card import build_card_for_folder, retarget_card

REQUIRED_FILES = ("model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py",
                  "preprocessor_config.json")  # fmt: skip
# What a model repository needs, and nothing of the training run's internals (checkpoints, pickled training_args.bin).
UPLOADED_PATTERNS = (*REQUIRED_FILES, "README.md", "*.png", "all_results.json", "train_results.json",
                     "eval_results.json", "test_results.json")  # fmt: skip


class PushError(RuntimeError):
    """A push that did not land; the message says why and what to do."""


def files_to_upload(folder: Path) -> list[Path]:
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise PushError(
            f"{folder} is not a complete hf_vit model folder: missing {', '.join(missing)}. "
            "Write folders with `hf-vit train`, `hf-vit convert` or `hf_vit.save_model_folder`."
        )
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in UPLOADED_PATTERNS)
    )


def checked_model_card(folder: Path, repo_id: str) -> ModelCard:
    """The folder's README.md pointed at `repo_id`, or a card generated from the folder when it has none, checked
    as the Hub will (valid YAML metadata with library_name and pipeline_tag, a parseable model-index)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return build_card_for_folder(folder, repo_id)
    try:
        card = ModelCard(readme.read_text(encoding="utf-8"))
    except Exception as error:  # huggingface_hub raises ValueError or yaml errors for bad metadata
        raise PushError(f"{readme}: invalid model card metadata ({error}); fix the YAML header or delete the file "
                        "to have a card generated.") from error  # fmt: skip
    for field in ("library_name", "pipeline_tag"):
        if not getattr(card.data, field, None):
            raise PushError(f"{readme}: the card's metadata has no {field}; add it to the YAML header.")
    return retarget_card(card, repo_id)


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a model folder to `repo_id` (created if needed; `revision` is a branch, created if needed) in one
    commit and return the commit URL. Raises `PushError` with a clear message when anything fails."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise PushError(f"--model {folder}: no such folder.")
    files = files_to_upload(folder)
    card = checked_model_card(folder, repo_id)
    # The card goes up as checked and pointed at repo_id, not as the file on disk.
    operations = [
        CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        for path in files
        if path.name != "README.md"
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8")))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload hf_vit model from {folder.name}",
            revision=revision,
        )
    # Any failure at the network boundary (HTTP errors, refused connections from huggingface_hub's HTTP client,
    # timeouts) ends the same way: nothing was committed and the folder is untouched.
    except Exception as error:
        # The error text of huggingface_hub carries no credentials; keep only its first line.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PushError(
            f"push of {folder} to {repo_id} at {constants.ENDPOINT} failed: {reason}. "
            "Nothing in the local folder was changed; run the same command again once the Hub is reachable "
            "(and check the token with `hf auth whoami` if it says 401/403)."
        ) from error
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model folder to upload")
    parser.add_argument("--repo-id", required=True, help="NAMESPACE/NAME of the model repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing)")
    parser.add_argument("--commit-message", help="the commit's title")
    args = parser.parse_args(argv)
    try:
        url = push_model(args.model, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message)  # fmt: skip
    except PushError as error:
        print(f"hf-vit push: {error}", file=sys.stderr)
        return 1
    print(f"Pushed {args.model} to {args.repo_id}: {url}")
    return 0
