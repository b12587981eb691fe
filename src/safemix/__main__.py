"""``python -m safemix`` runs the command line."""

from safemix.cli import main

main()
