"""Vendor product names normalise to the model names the scheduler matches on."""

import pytest

from agent.devices.profiles import PROFILES, normalise_model, profile_for


@pytest.mark.parametrize(
    ("name", "memory_mib", "model"),
    [
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA H100 PCIe", 81559, "H100-80GB"),
        ("NVIDIA H100 NVL", 95830, "H100-94GB"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", 40536, "A100-40GB"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("Tesla T4", 15360, "T4"),
        ("Tesla V100-SXM2-16GB", 16160, "V100-16GB"),
        ("Tesla V100-PCIE-32GB", 32510, "V100-32GB"),
        ("NVIDIA H200", 143771, "H200-141GB"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9856, "H100-80GB-MIG-1g.10gb"),
        ("Ascend910B", 65536, "Ascend-910B"),
    ],
)
def test_normalise(name, memory_mib, model):
    assert normalise_model(name, memory_mib) == model


def test_every_profile_name_normalises_to_its_model():
    for model, profile in PROFILES.items():
        assert normalise_model(profile.name, profile.memory_mib) == model


def test_unknown_model_without_size_is_refused_with_the_known_list():
    with pytest.raises(ValueError, match="unknown accelerator model 'B9'.*H100-80GB"):
        profile_for("B9")
    assert profile_for("RTX6000-48GB").memory_mib == 48 * 1024
