import os

import jax
import pytest

from typedpipe import memory


def test_host_memory_is_what_the_host_can_give_at_most_all_of_it():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < memory.available_bytes() <= total
    assert memory.budget() == int(memory.available_bytes() * memory.HOST_SHARE)


def test_a_cpu_device_has_the_hosts_available_memory():
    limit, where = memory.device_memory(jax.local_devices()[0])
    assert where == "host RAM"
    # Within what another process may take or free between the two reads.
    assert abs(limit - memory.available_bytes()) < 2**28
    assert memory.device_memory(free=True)[1] == "host RAM"


class _Accelerator:
    """A device as JAX describes a GPU's memory (no accelerator runs these tests)."""

    platform = "gpu"
    device_kind = "NVIDIA H200"

    def memory_stats(self):
        return {"bytes_limit": 100 * 2**30, "bytes_in_use": 30 * 2**30}


def test_an_accelerator_has_its_limit_or_what_is_free_of_it():
    device = _Accelerator()
    assert memory.device_memory(device) == (100 * 2**30, "NVIDIA H200 memory")  # type: ignore[arg-type]
    assert memory.device_memory(device, free=True) == (70 * 2**30, "NVIDIA H200 memory")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "size, unit, text",
    [
        (300, None, "0 KiB"),
        (12 * 2**10, None, "12 KiB"),
        (512 * 2**20, None, "512.00 MiB"),
        (1.3 * 2**30, None, "1.30 GiB"),
        (3 * 2**40, None, "3.00 TiB"),
        (2**29, "GiB", "0.50 GiB"),
        (3 * 2**40, "GiB", "3072.00 GiB"),
    ],
)
def test_sizes_read_as_a_person_reads_them(size, unit, text):
    assert memory.size_text(size, unit) == text


def test_memory_host_says_what_would_not_fit_against_the_budget(monkeypatch):
    monkeypatch.setattr(memory, "budget", lambda: 2**30)
    diagnostic = memory.over_budget("the images", 3 * 2**30, "num_samples = 1024", stage="[data]")
    assert diagnostic.code == "memory.host"
    assert diagnostic.message == (
        "the images would need 3.00 GiB of host memory; refused before allocating"
    )
    assert diagnostic.expected == "at most 1.00 GiB (50% of the available memory)"
    assert (diagnostic.got, diagnostic.stage) == ("3.00 GiB", "[data]")


def test_memory_exceeds_reads_as_the_train_step_and_the_bundle_say_it():
    step = memory.exceeds(
        "the compiled train step",
        20 * 2**30,
        16 * 2**30,
        "host RAM",
        batch="per device for batch 1024",
        stage="[train]",
        hint="batch_size = 512 under [train]",
        setting="batch_size = 1024",
        unit="GiB",
        share=True,
    )
    assert step.code == "memory.exceeds"
    assert step.message == (
        "the compiled train step needs 20.00 GiB per device for batch 1024; host RAM is 16.00 GiB"
    )
    assert step.expected == "at most 14.40 GiB (90% of host RAM)"
    assert step.got == "20.00 GiB for batch_size = 1024"
    bundle = memory.exceeds(
        "the model",
        2**29,
        2**29,
        "NVIDIA H200 memory",
        batch="for a batch of 8 uint8 8x8x1 images",
        stage="model bundle",
        hint="pass fewer images at once (batch_size = 7)",
    )
    assert bundle.message == (
        "the model needs 512.00 MiB for a batch of 8 uint8 8x8x1 images; "
        "NVIDIA H200 memory is 512.00 MiB"
    )
    assert (bundle.expected, bundle.got) == ("at most 460.80 MiB", "512.00 MiB")
