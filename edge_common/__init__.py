"""Code shared by the controller, the release agent and engine_builder.

Standard library only and Python 3.8 compatible: it runs on robots inside the agent's zip and the
engine_builder zip the trt_engine action plugin ships, and on the controller. One concern, one
place: the robot's identity (identity.py), the release compatibility rule (compat.py), version
order (versions.py), files written atomically and hashed (fsutil.py), the exit codes every
command of the project returns (exitcodes.py), the zip packer (pack.py) and what the signed
repository and the robot's client agree on beyond TUF (signing.py).
"""

from __future__ import annotations
