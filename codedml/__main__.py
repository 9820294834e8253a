"""``python -m codedml``: see :mod:`codedml.cli`. The exit status is the command's own, also
under mpiexec after a rank died (see :mod:`codedml.runtime._exit`)."""

from .cli import main
from .runtime._exit import exit_process

exit_process(main())
