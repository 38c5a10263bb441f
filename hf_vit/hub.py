"""Share a model folder on the Hub: `hf-vit push` and `push_model`; with `--space`, also a Gradio Space serving its
demo (`push_space`, files from `hf_vit.space`).

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
from .space import space_files

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
    return _commit(repo_id, operations, commit_message or f"Upload hf_vit model from {folder.name}",
                   what=str(folder), private=private, revision=revision, token=token)  # fmt: skip


def push_space(
    space_id: str,
    model_id: str,
    *,
    examples: str | Path | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Create or update the Gradio Space `space_id` serving the demo of the model repository `model_id` (see
    `hf_vit.space`) in one commit; return the commit URL. Raises `PushError` when it fails."""
    try:
        files = space_files(model_id, examples)
    except (ImportError, ValueError) as error:
        raise PushError(str(error)) from error
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()]
    return _commit(space_id, operations, f"hf_vit demo of {model_id}", what=f"the demo of {model_id}",
                   private=private, token=token, repo_type="space")  # fmt: skip


def _commit(repo_id, operations, message, *, what, private, token, revision=None, repo_type="model") -> str:
    api = HfApi(token=token)
    try:
        extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **extra)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
        commit = api.create_commit(
            repo_id, operations=operations, commit_message=message, revision=revision, repo_type=repo_type
        )
    # Any failure at the network boundary (HTTP errors, refused connections from huggingface_hub's HTTP client,
    # timeouts) ends the same way: nothing was committed and the local files are untouched.
    except Exception as error:
        # The error text of huggingface_hub carries no credentials; keep only its first line.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PushError(
            f"push of {what} to {repo_id} at {constants.ENDPOINT} failed: {reason}. "
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
    parser.add_argument("--space", help="also a Gradio Space NAMESPACE/NAME serving `hf-vit demo` of the model")
    parser.add_argument("--examples", help="with --space: a folder of example images the Space shows")
    args = parser.parse_args(argv)
    if args.examples and not args.space:
        parser.error("--examples goes with --space (the Space's example images).")
    try:
        if args.space:  # its files first: a Space that cannot be written stops the push before the model goes up
            space_files(args.repo_id, args.examples)
        url = push_model(args.model, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message)  # fmt: skip
        print(f"Pushed {args.model} to {args.repo_id}: {url}")
        if args.space:
            url = push_space(args.space, args.repo_id, examples=args.examples, private=args.private)
            print(f"Pushed the demo Space {args.space}: {url}")
    except (PushError, ImportError, ValueError) as error:
        print(f"hf-vit push: {error}", file=sys.stderr)
        return 1
    return 0
