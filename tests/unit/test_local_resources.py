"""The local engine's resource accounting: GPUs by id (fractions packed), CPUs, memory."""

from __future__ import annotations

import pytest

from swell._engines.local_resources import DoesNotFit, Machine, ResourcePool


def pool(gpus: int = 2, cpus: float = 4.0, memory: int = 8 << 30) -> ResourcePool:
    return ResourcePool(Machine(cpus, memory, tuple(str(i) for i in range(gpus)), {"disk": 1}))


def test_whole_gpus_go_to_different_replicas() -> None:
    resources = pool()
    assert resources.reserve("a", {"num_gpus": 1}).gpu_ids == ("0",)
    assert resources.reserve("b", {"num_gpus": 1}).gpu_ids == ("1",)
    with pytest.raises(DoesNotFit, match="only 0 GPU"):
        resources.reserve("c", {"num_gpus": 1})
    resources.release("a")
    assert resources.reserve("c", {"num_gpus": 1}).gpu_ids == ("0",)


def test_fractions_are_packed_onto_one_device_first() -> None:
    resources = pool()
    placed = [resources.reserve(f"r{i}", {"num_gpus": 0.5}).gpu_ids for i in range(4)]
    assert placed == [("0",), ("0",), ("1",), ("1",)]
    with pytest.raises(DoesNotFit, match="no GPU has that much left"):
        resources.reserve("r4", {"num_gpus": 0.5})


def test_tenths_add_up_to_exactly_one_device() -> None:
    resources = pool(gpus=1)
    for i in range(10):
        assert resources.reserve(f"r{i}", {"num_gpus": 0.1}).gpu_ids == ("0",)
    with pytest.raises(DoesNotFit):
        resources.reserve("r10", {"num_gpus": 0.1})


def test_several_whole_gpus_and_the_environment_they_give() -> None:
    resources = pool(gpus=3)
    assignment = resources.reserve("a", {"num_gpus": 2})
    assert assignment.env() == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert resources.reserve("b", {}).env() == {}
    with pytest.raises(DoesNotFit, match="ask for whole GPUs"):
        resources.reserve("c", {"num_gpus": 1.5})


def test_more_than_the_machine_has_says_so() -> None:
    resources = pool(gpus=0, cpus=2.0, memory=1 << 30)
    with pytest.raises(DoesNotFit, match=r"num_gpus=1 is more than the 0 GPU\(s\)"):
        resources.reserve("a", {"num_gpus": 1})
    with pytest.raises(DoesNotFit, match="num_cpus=3 is more than this machine has"):
        resources.reserve("a", {"num_cpus": 3})
    with pytest.raises(DoesNotFit, match="memory"):
        resources.reserve("a", {"memory": 2 << 30})
    with pytest.raises(DoesNotFit, match="resources\\['tpu'\\]"):
        resources.reserve("a", {"resources": {"tpu": 1}})


def test_cpus_and_custom_resources_are_shared_out() -> None:
    resources = pool(cpus=2.0)
    resources.reserve("a", {"num_cpus": 1.5, "resources": {"disk": 1}})
    with pytest.raises(DoesNotFit, match=r"1\.5 of 2 are held by other replicas"):
        resources.reserve("b", {"num_cpus": 1})
    with pytest.raises(DoesNotFit, match="disk"):
        resources.reserve("b", {"resources": {"disk": 0.5}})
    resources.release("a")
    resources.reserve("b", {"num_cpus": 2})
