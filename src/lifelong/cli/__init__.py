"""The ``lifelong`` command line. Each area adds its commands in its own module."""
