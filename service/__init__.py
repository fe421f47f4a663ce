"""The ACMIL web service (FastAPI) and slide viewer; start it with ``acmil serve``.

``acmil.service.main.create_app(settings)`` builds the app; see :mod:`acmil.service.config` for settings.
"""
