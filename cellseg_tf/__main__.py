"""`python -m cellseg_tf` is the same as the `cellseg-tf` console script."""
from .cli import main

raise SystemExit(main())
