"""`python -m simulator --port 8900 ...`"""

import typer

from simulator.cli import simulator_command

typer.run(simulator_command)
