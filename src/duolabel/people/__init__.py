"""The human side's logic: leases and queues, the onboarding exam, quality rules and accounts.

The web app's actions layer and the stages call these modules; they hold no HTTP code.
"""
