"""The annotation web app (``duolabel serve``); needs ``pip install 'duolabel[web]'``."""

from duolabel.web.app import create_app, serve

__all__ = ["create_app", "serve"]
