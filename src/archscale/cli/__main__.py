"""`python -m archscale.cli`: the same as the `archscale` command."""
import sys

from archscale.cli.main import main

sys.exit(main())
