"""Exit codes, the same in every command of the project (edge-agent, engine_builder, edge-deploy).

A caller that reads only the exit code still knows what happened: 3 always means a refusal (a
signature, a gate or a contract said no and nothing changed), never a missing library.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # something went wrong; the message says what
USAGE = 2  # the command line or an option is wrong
REFUSED = 3  # verification or a gate refused the input: nothing changed
ROLLED_BACK = 4  # the health gate failed and the robot went back to the previous release
BUSY = 5  # another run holds the lock
MISSING_DEPENDENCY = 6  # a library or tool is not installed here; the message names it
# The robot's clock contradicts the signed metadata (nothing verified or changed). Not a refusal:
# waiting does not fix it and the OTA unit must fail where a refusal (3) counts as handled.
CLOCK = 7
