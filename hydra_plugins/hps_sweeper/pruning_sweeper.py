"""Registers the platform's sweeper with Hydra.

Hydra instantiates plugins only from modules under the ``hydra_plugins`` namespace, so the sweeper that lives
in :mod:`hps.search.sweeper` is named here; ``conf/hydra/sweeper/hps.yaml`` targets this class.
"""

from hps.search.sweeper import PruningSweeper as _PlatformSweeper


class PruningSweeper(_PlatformSweeper):
    """:class:`hps.search.sweeper.PruningSweeper`, under the name Hydra accepts."""
