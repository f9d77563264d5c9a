"""`python -m costwatch` is the same as the `costwatch` command."""

from costwatch.cli import main

raise SystemExit(main())
