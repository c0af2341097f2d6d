"""The ``callguard`` command, one module per command group."""
