"""Where a model reference points: a local folder or file, or a Hugging Face Hub repository.

Every flag that takes a run, a pipeline folder or a classifier (`synthesize RUN`, `evaluate RUN`,
`--filter-classifier`, `train-classifier --init`, `generator.init_from`) accepts either. One rule decides:

- an existing local path is always local;
- `hf://OWNER/NAME[@REVISION]` is always the Hub;
- `OWNER/NAME[@REVISION]` that is not a local path is the Hub, unless OWNER is a local folder (`runs/00001-mnst`
  with a `runs/` here is a mistyped local run, answered as a missing local folder with the closest names there);
- `hf:OWNER/NAME` or `hf:/OWNER/NAME` (a mistyped `hf://`) is refused, naming the right spelling.

Hub repositories are fetched with `huggingface_hub.snapshot_download` into its cache, so `HF_HUB_OFFLINE=1` works
from the cache and says so clearly when the repository is not there.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Optional

from ltaug.errors import LtaugError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[\w./-]+))?$")
HUB_PREFIX = "hf://"


def parse_hub_id(ref: str) -> Optional[tuple[str, Optional[str]]]:
    """(repo_id, revision) when `ref` names a Hub repository under the rule above, else None."""
    text = str(ref)
    forced = text.startswith(HUB_PREFIX)
    if forced:
        text = text[len(HUB_PREFIX):]
    elif text.startswith("hf:") and not Path(text).expanduser().exists():
        raise LtaugError(f"{ref}: a Hub reference is hf://OWNER/NAME (two slashes) or OWNER/NAME; a local path "
                         "names an existing file or folder")
    elif Path(text).expanduser().exists() or Path(text.split("/", 1)[0]).expanduser().is_dir():
        return None
    m = _HUB_ID.match(text)
    if not m:
        if forced:
            raise LtaugError(f"{ref}: a Hub reference is hf://OWNER/NAME or hf://OWNER/NAME@REVISION")
        return None
    return m.group("repo"), m.group("rev")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(ref: str | os.PathLike, *, flag: str, allow_patterns: Optional[list[str]] = None) -> Path:
    """The local path for `ref`: the path itself, or the Hub repository's snapshot folder (downloaded or cached).

    `flag` names the option or recipe key the reference came from, for the error messages."""
    hub = parse_hub_id(str(ref))
    if hub is None:
        path = Path(ref).expanduser()
        if not path.exists():
            raise LtaugError(f"{flag} {ref}: no such file or folder{closest_hint(path)} (give a local path, or a "
                             "Hub id OWNER/NAME)")
        return path
    repo_id, revision = hub
    from huggingface_hub import snapshot_download  # noqa: PLC0415  (only when a Hub id is given)
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError  # noqa: PLC0415

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except LocalEntryNotFoundError as e:
        if hub_offline():
            raise LtaugError(f"{flag} {ref}: the Hub is offline (HF_HUB_OFFLINE=1) and {repo_id} is not in the "
                             "local cache; fetch it on a machine with network (`hf download "
                             f"{repo_id}`), copy the cache, or pass a local folder") from e
        raise LtaugError(f"{flag} {ref}: could not reach the Hub to fetch {repo_id} ({e}); check the network, "
                         "or pass a local folder") from e
    except HfHubHTTPError as e:
        raise LtaugError(f"{flag} {ref}: the Hub refused {repo_id} ({e}); check the id and your token "
                         "(`hf auth login`), or pass a local folder") from e


def closest_hint(path: Path) -> str:
    """'; did you mean runs/00001-mnist?' from the names beside a missing path (empty when none is close)."""
    try:
        names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        return ""
    near = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean {path.parent / near[0]}?" if near else ""
