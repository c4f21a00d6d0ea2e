"""What puts a generate run together from its config, above ``training``, ``evaluation`` and ``viewer``: ``build``
(the ``Trainer`` and the callbacks the config asks for) and ``generate`` (one run in its run directory: new, resumed
or replacing an earlier one). Import the modules themselves (this package imports nothing)."""
