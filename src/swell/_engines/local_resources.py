"""What one machine can give replicas, and who holds what: CPUs, memory, GPUs, resources.

The local engine reserves a replica's ``ray_actor_options`` here before it starts it, so a
replica that does not fit is refused with the reason (instead of every replica landing on
GPU 0), and GPUs are handed out by id, fractions packed onto one device as Ray does. The
accounting is pure: the machine's totals come in, decisions come out; unit-tested as such.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

# GPU fractions are counted in 1/10000ths so 0.1 * 10 is exactly one device.
_UNITS = 10_000


class DoesNotFit(Exception):
    """The machine cannot give a replica what its ray_actor_options ask for (now or ever)."""


@dataclass(frozen=True)
class Machine:
    cpus: float
    memory_bytes: int
    gpu_ids: tuple[str, ...]
    resources: dict[str, float] = field(default_factory=dict)


def this_machine() -> Machine:
    """CPUs, memory, and the GPUs visible to swell (``CUDA_VISIBLE_DEVICES`` when set, else
    ``nvidia-smi -L``)."""
    return Machine(
        cpus=float(os.cpu_count() or 1),
        memory_bytes=_memory_bytes(),
        gpu_ids=_gpu_ids(),
    )


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _gpu_ids() -> tuple[str, ...]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(part.strip() for part in visible.split(",") if part.strip())
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        listing = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU"))


@dataclass(frozen=True)
class Assignment:
    """What a replica got: the GPU ids it may use (its CUDA_VISIBLE_DEVICES)."""

    gpu_ids: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpu_ids)} if self.gpu_ids else {}


@dataclass
class _Hold:
    cpus: float
    memory_bytes: int
    gpu_units: dict[str, int]
    resources: dict[str, float]


class ResourcePool:
    """Reservations against one machine's totals."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._holds: dict[str, _Hold] = {}

    def reserve(self, replica_id: str, options: dict[str, Any]) -> Assignment:
        """Reserve what ``options`` (ray_actor_options) ask for, or raise DoesNotFit saying
        what is missing."""
        cpus = float(options.get("num_cpus", 0) or 0)
        memory = int(options.get("memory", 0) or 0)
        gpus = float(options.get("num_gpus", 0) or 0)
        wanted = {k: float(v) for k, v in (options.get("resources") or {}).items()}
        self._check("num_cpus", cpus, self.machine.cpus, self._used_cpus())
        self._check("memory", memory, self.machine.memory_bytes, self._used_memory())
        for name, amount in wanted.items():
            total = self.machine.resources.get(name, 0.0)
            used = sum(h.resources.get(name, 0.0) for h in self._holds.values())
            self._check(f"resources[{name!r}]", amount, total, used)
        gpu_units = self._place_gpus(gpus)
        self._holds[replica_id] = _Hold(cpus, memory, gpu_units, wanted)
        return Assignment(tuple(gpu_units))

    def release(self, replica_id: str) -> None:
        self._holds.pop(replica_id, None)

    def _used_cpus(self) -> float:
        return sum(h.cpus for h in self._holds.values())

    def _used_memory(self) -> int:
        return sum(h.memory_bytes for h in self._holds.values())

    @staticmethod
    def _check(what: str, asked: float, total: float, used: float) -> None:
        if asked <= 0:
            return
        if asked > total:
            raise DoesNotFit(
                f"ray_actor_options.{what}={asked:g} is more than this machine has ({total:g}); "
                "lower it, or run on a Ray cluster that has it"
            )
        if used + asked > total:
            raise DoesNotFit(
                f"ray_actor_options.{what}={asked:g} does not fit: {used:g} of {total:g} are "
                "held by other replicas; lower it or run fewer replicas"
            )

    def _gpu_free_units(self) -> dict[str, int]:
        free = {gpu: _UNITS for gpu in self.machine.gpu_ids}
        for hold in self._holds.values():
            for gpu, units in hold.gpu_units.items():
                free[gpu] -= units
        return free

    def _place_gpus(self, gpus: float) -> dict[str, int]:
        """Whole devices for gpus >= 1, else a fraction of the fullest device it fits on."""
        if gpus <= 0:
            return {}
        total = len(self.machine.gpu_ids)
        if gpus > total:
            raise DoesNotFit(
                f"ray_actor_options.num_gpus={gpus:g} is more than the {total} GPU(s) swell "
                "sees (CUDA_VISIBLE_DEVICES, or nvidia-smi -L); lower it, or run on a Ray "
                "cluster that has them"
            )
        free = self._gpu_free_units()
        if gpus >= 1:
            if gpus != int(gpus):
                raise DoesNotFit(
                    f"ray_actor_options.num_gpus={gpus:g}: above 1, ask for whole GPUs"
                )
            idle = [gpu for gpu in self.machine.gpu_ids if free[gpu] == _UNITS]
            if len(idle) < int(gpus):
                raise DoesNotFit(
                    f"ray_actor_options.num_gpus={gpus:g} does not fit: only {len(idle)} GPU(s) "
                    "are wholly free; lower it or run fewer replicas"
                )
            return {gpu: _UNITS for gpu in idle[: int(gpus)]}
        units = round(gpus * _UNITS)
        fitting = [gpu for gpu in self.machine.gpu_ids if free[gpu] >= units]
        if not fitting:
            raise DoesNotFit(
                f"ray_actor_options.num_gpus={gpus:g} does not fit: no GPU has that much "
                "left; lower it or run fewer replicas"
            )
        # Pack: the device with the least room left that still fits, as Ray packs fractions.
        chosen = min(fitting, key=lambda gpu: (free[gpu], self.machine.gpu_ids.index(gpu)))
        return {chosen: units}
