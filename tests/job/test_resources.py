"""The job refuses what Ray could never schedule, naming the option to change."""

from cohort.job.resources import GiB, Request, resource_problems

LAPTOP = [{"CPU": 2.0, "memory": 16.0 * GiB}]
CLUSTER = [{"CPU": 0.0, "memory": 8.0 * GiB},  # head
           {"CPU": 16.0, "memory": 64.0 * GiB},
           {"CPU": 8.0, "GPU": 1.0, "memory": 64.0 * GiB}]


def _request(**kw) -> Request:
    base = {"task_cpus": 1.0, "task_memory_gb": 3.0, "actors": 1, "actor_gpus": 0,
            "actor_cpus": 0.0}
    return Request(**{**base, **kw})


def test_a_laptop_runs_the_default_job_and_a_cluster_runs_a_gpu_job():
    assert resource_problems(_request(), LAPTOP) == []
    assert resource_problems(_request(actor_gpus=1, actor_cpus=1.0), CLUSTER) == []


def test_gpus_the_machine_lacks_are_refused_with_the_option_named():
    (problem,) = resource_problems(_request(actor_gpus=1, actor_cpus=1.0), LAPTOP)
    assert "--gpus" in problem and "0 GPU" in problem and "--gpus 0" in problem
    (problem,) = resource_problems(_request(actors=2, actor_gpus=1, actor_cpus=1.0), CLUSTER)
    assert "--gpus 2" in problem and "1 GPU" in problem


def test_a_task_larger_than_every_node_is_refused():
    problems = resource_problems(_request(task_memory_gb=100.0), CLUSTER)
    assert len(problems) == 1 and "--task-memory" in problems[0] and "64.0 GB" in problems[0]
    assert "--task-cpus" in resource_problems(_request(task_cpus=4.0), LAPTOP)[0]
    assert "--actor-cpus" in resource_problems(_request(actor_cpus=3.0), LAPTOP)[0]
