"""Edge Deploy controller: simulated fleet, releases, rollouts and reports."""

__version__ = "0.1.0"
