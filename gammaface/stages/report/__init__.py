"""report: the run's page, its figures and tables."""

from gammaface.stages import Stage, fixed

STAGE = Stage("report", folder="report", needs=fixed("downstream", "audit"),
              keys=fixed("downstream"))
