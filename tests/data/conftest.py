"""Fixtures of the data tests (helpers in vis_data_helpers.py)."""
from __future__ import annotations

import pytest
from vis_data_helpers import make_vis_dataset


@pytest.fixture(params=["list", "str", "poly"])
def vis_dataset(request, tmp_path):
    return make_vis_dataset(tmp_path, request.param)


@pytest.fixture
def list_dataset(tmp_path):
    return make_vis_dataset(tmp_path, "list")


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory):
    from crossvis.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_videos=3, num_frames=6,
                                      height=48, width=64, num_categories=4, max_objects=3, seed=3)
