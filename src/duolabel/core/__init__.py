"""Pure estimators on numpy arrays and DataFrames: calibration, aggregation, routing policies,
operating points and their certificates, quality statistics, audit estimates, task types.

Nothing here imports the store, the web app, SQLAlchemy or reads a configuration file: every
function takes arrays and keyword parameters, so it is tested without a project and reused by
the stages, ``simulate`` and the report alike.
"""

# Task types kept in modules of their own register themselves when imported; importing them
# here makes them built-ins wherever duolabel.core.tasks is used.
from duolabel.core import spans as _spans  # noqa: F401
