"""Thin store adapters, one module per stage: each reads its input from the store, calls
``duolabel.core``, and writes its output back. A stage takes a :class:`~duolabel.context.Context`
(folder, configuration, store), never the ``Project`` facade, and never calls another stage:
``duolabel.pipeline`` alone sequences them.
"""
