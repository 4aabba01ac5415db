"""GPU instance types the launcher accepts, and what they cost.

On-demand list prices in US$ per instance-hour for us-east-1 (other regions differ
by up to ~30%), and a typical spot price as a share of on-demand (spot moves with
demand: the figure is for estimates, not a quote). Check the AWS pricing pages for
today's numbers.
"""

from trainer.errors import UsageError

PRICES_AS_OF = "2025-06"

# family -> typical spot price / on-demand price
SPOT_SHARE = {"p3": 0.30, "g4dn": 0.35, "g5": 0.40, "g6": 0.40, "g6e": 0.45, "p4d": 0.40, "p5": 0.45}

EC2_ON_DEMAND = {
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672, "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.805, "g6.2xlarge": 0.978, "g6.4xlarge": 1.323, "g6.8xlarge": 2.014,
    "g6.12xlarge": 4.602, "g6.16xlarge": 3.397, "g6.24xlarge": 6.675, "g6.48xlarge": 13.350,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.242, "g6e.12xlarge": 10.493,
    "p4d.24xlarge": 21.958, "p5.48xlarge": 55.040,
}

SAGEMAKER_ON_DEMAND = {
    "ml.p3.2xlarge": 3.825, "ml.p3.8xlarge": 14.688, "ml.p3.16xlarge": 28.152,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 0.94, "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03, "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09, "ml.g5.16xlarge": 5.12, "ml.g5.24xlarge": 10.18, "ml.g5.48xlarge": 20.36,
    "ml.g6.xlarge": 1.006, "ml.g6.2xlarge": 1.222, "ml.g6.4xlarge": 1.654, "ml.g6.8xlarge": 2.518,
    "ml.g6.12xlarge": 5.752, "ml.g6.16xlarge": 4.246, "ml.g6.24xlarge": 8.344, "ml.g6.48xlarge": 16.688,
    "ml.p4d.24xlarge": 27.448, "ml.p5.48xlarge": 68.80,
}

GPU_INSTANCE_TYPES = {"sagemaker": tuple(SAGEMAKER_ON_DEMAND), "ec2": tuple(EC2_ON_DEMAND)}
DEFAULT_INSTANCE_TYPE = {"sagemaker": "ml.p3.2xlarge", "ec2": "p3.2xlarge", "local": "local"}


def family(instance_type: str) -> str:
    return instance_type.removeprefix("ml.").split(".")[0]


def check_instance_type(name: str, backend: str, given: str | None = None, source: str | None = None) -> str:
    """`name` if the backend knows it as a GPU type; else a usage error listing good ones, showing `given`
    (what the user set, before `ml.` was added or taken off) and where it came from (`source`, a setting)."""
    if backend == "local":
        return name
    good = GPU_INSTANCE_TYPES[backend]
    if name in good:
        return name
    hint = ""
    if backend == "sagemaker" and f"ml.{name}" in good:
        hint = f" (SageMaker names it ml.{name})"
    elif backend == "ec2" and name.removeprefix("ml.") in good:
        hint = f" (EC2 names it {name.removeprefix('ml.')})"
    # Every name, here: no --help lists them (this line is the one place a user meets the whole table).
    where = f" (from {source})" if source else ""
    raise UsageError(f"unknown GPU instance type {str(given or name)[:80]!r} for {backend}{where}{hint}; "
                     f"choose one of {', '.join(good)}")


def check_instance_type_setting(name: str) -> str:
    """`name` if a cloud backend runs it: the setting serves whichever backend a job runs on, and `submit`
    adds or drops `ml.` to match (g5.xlarge and ml.g5.xlarge are one machine); "local" means its default."""
    bare = name.removeprefix("ml.")
    if name == "local" or bare in EC2_ON_DEMAND or f"ml.{bare}" in SAGEMAKER_ON_DEMAND:
        return name
    raise UsageError(f"instance_type {name[:80]!r} is not a GPU instance type gankit knows; choose one of "
                     f"{', '.join(EC2_ON_DEMAND)} (with ml. in front or not: each backend uses its own name)")


def price_per_hour(instance_type: str, spot: bool) -> float:
    """US$ per instance-hour (on-demand list price, or typical spot); 0.0 for the local backend."""
    table = SAGEMAKER_ON_DEMAND if instance_type.startswith("ml.") else EC2_ON_DEMAND
    if instance_type not in table:
        return 0.0
    price = table[instance_type]
    return price * SPOT_SHARE.get(family(instance_type), 0.5) if spot else price


def estimate(instance_type: str, instance_count: int, spot: bool, max_run_seconds: int) -> float:
    """The most a run can cost: price x instances x max runtime."""
    return price_per_hour(instance_type, spot) * instance_count * max_run_seconds / 3600
