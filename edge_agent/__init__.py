"""The on-robot release agent: verify, stage, activate, roll back and report releases.

One code path for push (Ansible runs the agent's commands) and pull (an OTA timer runs them).
Standard library plus the TUF client only, and Python 3.8 compatible (JetPack 5 robots):
the agent ships as one zip (`edge-agent.pyz`) together with engine_builder.
"""

__version__ = "0.1.0"
