"""Expert trajectories for MTT: networks trained on real data, parameters stored after every epoch.

``python -m raydd.experts`` trains them in parallel on Ray into Arrow trajectory shards under
``STORE/experts/DATASET/MODEL``; :func:`read_epoch` / :class:`Trajectory` read one epoch of one
trajectory without reading the rest.
"""

from raydd.experts.parameters import ModelSpec, load_parameters, unflatten_parameters
from raydd.experts.trajectories import Trajectory, open_trajectory, read_epoch

__all__ = ["ModelSpec", "Trajectory", "load_parameters", "open_trajectory", "read_epoch", "unflatten_parameters"]
