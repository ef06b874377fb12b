"""`python -m lth.launch --processes N -- SCRIPT [ARGS...]`: N local processes forming one
`jax.distributed` job (the launcher itself: `lth.integrations.launch`)."""

import sys

from lth.integrations.launch import main

if __name__ == "__main__":
    sys.exit(main())
