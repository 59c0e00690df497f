"""evol_instruct on a local Ray cluster: its lineages are independent, so shards give the
single-process dataset (self_instruct and magpie, whose rounds depend on each other, are
refused on Ray: tests/test_self_instruct.py, tests/test_magpie.py)."""

from __future__ import annotations

import pytest

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.instruction_pipelines import evol_pipeline, outputs_of, run_info
from tests.helpers.processes import factory_cli
from tests.helpers.ray_cluster import on_ray

pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'factory[ray]'")


def test_evol_instruct_shards_on_ray_give_the_single_process_dataset(tmp_path, cluster):
    with loopback_process("--slots", "8") as url:
        single = evol_pipeline(tmp_path / "single", url, count=24)
        assert factory_cli("run", str(single), "--quiet").returncode == 0
        sharded = evol_pipeline(tmp_path / "sharded", url, count=24)
        before = sum(server_stats(url)["received"].values())
        result = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster, shards=3), timeout=300)
        assert result.returncode == 0, result.stderr
        sent = sum(server_stats(url)["received"].values()) - before
    assert outputs_of(tmp_path / "sharded") == outputs_of(tmp_path / "single")
    assert run_info(tmp_path / "sharded")["usage"]["requests"] == sent == run_info(tmp_path / "single")["usage"]["requests"]
