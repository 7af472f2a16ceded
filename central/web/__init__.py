"""Central's web application for its staff (Django): find, watch, approve and audit recordings, and watch the
fleet. `recorder central web` serves it (server.py); `settings.configure_django` sets Django up from central's
configuration, so nothing is read from the environment."""
