"""Model and data set references: a local directory, else a hub id fetched into the hub cache.

A reference that is a directory on the node (after ``paths.resolve_path``) is used as it is.
Anything else shaped like a hub id (``org/name`` or ``name``) goes through ``huggingface_hub``
into the spec's ``hub_cache`` (default: ``HF_HUB_CACHE`` / ``HF_HOME``, as the hub library sets
them); a node without the hub (``HF_HUB_OFFLINE=1``, no network) gets an error naming the id.
"""

from __future__ import annotations

import os
import re

from workloads.paths import resolve_path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


class HubError(ValueError):
    """A reference that is neither on the node nor available from the hub (names the id)."""


def is_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.match(ref)) and not ref.startswith(".") and ".." not in ref


def local_dir(ref: str) -> str | None:
    """``ref`` as a directory on this node, or None."""
    path = resolve_path(os.path.expanduser(ref))
    return path if path and os.path.isdir(path) else None


def _fail(what: str, ref: str, cache: str | None, exc: Exception, needs: str | None) -> HubError:
    where = cache or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "the default hub cache"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    hint = f"; run first: {needs}" if needs else ""
    return HubError(f"{what}: {ref!r} is not a directory on this node, and the hub id {ref!r} is not in "
                    f"{where} and could not be fetched ({reason}){hint}")


def resolve_model(ref: str, what: str, *, cache: str | None = None, revision: str | None = None,
                  needs: str | None = None) -> str:
    """A local directory holding the model (or tokenizer) ``ref``; fetched from the hub if needed."""
    found = local_dir(ref)
    if found:
        return found
    if os.path.isabs(ref) or not is_hub_id(ref):
        hint = f"; run first: {needs}" if needs else ""
        raise HubError(f"{what}: {ref} does not exist on this node{hint}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, revision=revision, cache_dir=cache, allow_patterns=MODEL_FILES)
    except Exception as exc:  # noqa: BLE001 - offline, missing, gated, network: one clear error
        raise _fail(what, ref, cache, exc, needs) from None


def cached_file(ref: str, filename: str, *, cache: str | None = None, revision: str | None = None) -> str | None:
    """One file of a local directory or hub model (cache first, then the hub); None if unavailable."""
    found = local_dir(ref)
    if found:
        path = os.path.join(found, filename)
        return path if os.path.isfile(path) else None
    if not is_hub_id(ref):
        return None
    from huggingface_hub import hf_hub_download

    for local_only in (True, False):
        try:
            return hf_hub_download(ref, filename, revision=revision, cache_dir=cache, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - not cached / not reachable: try the next way, then give up
            continue
    return None


def load_hub_dataset(ref: str, *, split: str, config_name: str | None, revision: str | None, cache: str | None,
                     streaming: bool, needs: str | None = None):  # noqa: ANN201 - a datasets object
    """A hub data set's split through ``datasets`` (streamed unless ``streaming`` is off)."""
    import datasets

    try:
        return datasets.load_dataset(ref, config_name, split=split, revision=revision, cache_dir=cache,
                                     streaming=streaming)
    except Exception as exc:  # noqa: BLE001
        raise _fail("data", ref, cache, exc, needs) from None
