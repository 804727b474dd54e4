"""Faultline's HTTP face: seed 000's REST API, the operations endpoints and the dashboard.

`create_app(AppContext(...))` builds the FastAPI application; `ApiServer` runs it.
"""
