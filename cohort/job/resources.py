"""Does the Ray cluster have what the job asks for?

Ray Data waits for resources that never come without a word: a job asking for a GPU on a
machine without one, or for more memory per task than any node has, would hang forever after
indexing. `resource_problems` compares the request with the nodes (each task and each actor
must fit on one node); `run_cohort` refuses to start on a fixed local Ray and warns on a
cluster, whose autoscaler may still add the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class Request:
    """What one task and one actor of the job reserve, and how many actors it needs."""

    task_cpus: float
    task_memory_gb: float
    actors: int
    actor_gpus: int  # per actor: 1 or 0
    actor_cpus: float


def resource_problems(request: Request, nodes: list[dict[str, float]]) -> list[str]:
    """What cannot be scheduled, in words naming the option to change; [] when it fits.

    Args:
        nodes: the resources of each alive node (Ray's names: "CPU", "GPU", "memory" in
            bytes), as in ``ray.nodes()[i]["Resources"]``.
    """
    problems = []
    task_fits = [n for n in nodes if n.get("CPU", 0.0) >= request.task_cpus
                 and n.get("memory", 0.0) >= request.task_memory_gb * GiB]
    if not task_fits:
        most_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        most_mem = max((n.get("memory", 0.0) for n in nodes), default=0.0) / GiB
        problems.append(
            f"no node can run a series task: each reserves {request.task_cpus:g} CPU "
            f"(--task-cpus) and {request.task_memory_gb:g} GB (--task-memory), the largest "
            f"node has {most_cpu:g} CPUs and {most_mem:.1f} GB for tasks")
    if request.actor_gpus:
        gpus = sum(int(n.get("GPU", 0.0)) for n in nodes
                   if n.get("CPU", 0.0) >= request.actor_cpus)
        if gpus < request.actors:
            problems.append(
                f"--gpus {request.actors} asks for {request.actors} inference actor(s) with one "
                f"GPU each, the cluster has {gpus} GPU(s) on nodes with {request.actor_cpus:g} "
                "free CPU (--actor-cpus); use --gpus 0 for CPU actors")
    else:
        if not any(n.get("CPU", 0.0) >= request.actor_cpus for n in nodes):
            problems.append(f"no node has {request.actor_cpus:g} CPUs for an inference actor "
                            "(--actor-cpus)")
    return problems


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of the alive nodes of the connected Ray cluster."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
