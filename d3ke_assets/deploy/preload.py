"""What a long-lived worker process imports before it forks the processes that execute steps
(Celery's prefork pool, the multiprocess executor's forkserver): the project's definitions and
the libraries the steps import only when they first need them, OpenSim's bindings (with its
logging set up) and PyAV.  Without this every fresh step process paid for them on its first step.
"""

from __future__ import annotations

import av

from d3ke_assets import definitions
from d3ke_assets.biomech.opensim_tools import opensim_module

LOADED = (definitions, av, opensim_module())  # loaded once, before the fork
