"""The error raised for data that cannot be found or used as configured."""


class DataError(ValueError):
    """Data that cannot be found or used as configured."""
