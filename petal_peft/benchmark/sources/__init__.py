"""Data sources of the benchmark, by name: ``synthetic``, ``real_faces`` and ``identity_folder``.

A source is ``source(settings, image_size) -> BenchmarkData``, registered in :data:`DATA_SOURCES`; a new
one (another face set) needs only such a function and a ``@DATA_SOURCES.register("name")`` line.
"""

from ..data import DATA_SOURCES
from . import identity_folder, real_faces, synthetic  # noqa: F401  (register the built-in sources)
from .real_faces import RealFacePlan, SplitPlan, plan_real_faces

__all__ = ["DATA_SOURCES", "RealFacePlan", "SplitPlan", "build_data", "plan_real_faces"]


def build_data(settings, image_size: int):
    """The :class:`~petal_peft.benchmark.data.BenchmarkData` of ``settings.source`` at ``image_size``."""
    return DATA_SOURCES.get(settings.source)(settings, image_size)
