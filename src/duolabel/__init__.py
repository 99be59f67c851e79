"""duolabel: label text datasets with a model and people together.

Examples
--------
>>> import duolabel
>>> "Project" in duolabel.__all__ and "DataError" in duolabel.__all__
True
"""

from duolabel.errors import ConfigError, DataError, DuolabelError, ProjectError, SetupError
from duolabel.project import Project, init_project

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DuolabelError",
    "Project",
    "ProjectError",
    "SetupError",
    "__version__",
    "init_project",
]
