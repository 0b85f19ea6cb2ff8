"""``python -m hpstudy`` is the ``hpstudy`` command."""

from .cli import main

main()
