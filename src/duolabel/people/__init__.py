"""The human side's logic: leases and queues, the onboarding exam, quality rules and accounts.

- :mod:`~duolabel.people.assignments`: what every queue shares (a ``Task``, leasing, recording an answer).
- :mod:`~duolabel.people.leases`: the crowd queue (``lease_task``, ``submit_answer``, ``skip_task``, ...).
- :mod:`~duolabel.people.experts`: the expert queue (``enqueue_expert``, ``next_expert_task``, ...).
- :mod:`~duolabel.people.exam`: the onboarding exam and its scoring.
- :mod:`~duolabel.people.qc`: the quality rules of :mod:`duolabel.core.rules` applied to the store.
- :mod:`~duolabel.people.accounts`: passwords, invitations, login throttling, sessions.

The web app's actions layer (:mod:`duolabel.web.actions`) and the stages call these modules;
they hold no HTTP code.
"""
