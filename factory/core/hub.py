"""Models from the Hugging Face Hub: can this one be had, here and now?

`from_pretrained` retries for about a minute before it says no when the Hub is out
of reach; a model in a local folder or the local cache needs no network at all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from factory.core.errors import FactoryError

T = TypeVar("T")


def local_folder(name: str) -> Path | None:
    path = Path(os.path.expanduser(name))
    return path if path.exists() else None


def cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


def reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
        return True
    except OSError:
        return False


def obtainable(name: str) -> bool:
    """True when loading `name` can work: a local folder, the cache, or a reachable Hub."""
    return local_folder(name) is not None or cached(name) or reachable()


def require(what: str, name: str, where: str, hint: str) -> None:
    """Before anything is spent: raise ConfigError (exit 2, naming `where`) unless
    `name` can be loaded here: a local folder, the local cache, or a reachable Hub."""
    from factory.core.errors import ConfigError

    if not obtainable(name):
        raise ConfigError(f"{where}: {what} {name!r} is neither a local folder nor in the local Hugging Face cache, "
                          f"and the Hub is out of reach; {hint}")


def load(what: str, name: str, loader: Callable[[str], T], hint: str) -> T:
    """`loader(source)` for a local folder or Hub id, or one FactoryError line saying why not.

    `what` names the thing ("embedding model"), `hint` says what to change instead.
    """
    if not obtainable(name):
        raise FactoryError(f"cannot load {what} {name!r}: the Hugging Face Hub is out of reach and it is not in "
                           f"the local cache; {hint}")
    try:
        return loader(str(local_folder(name) or name))
    except (OSError, ValueError) as err:
        raise FactoryError(f"cannot load {what} {name!r}: {' '.join(str(err).split())[:300]}") from err
