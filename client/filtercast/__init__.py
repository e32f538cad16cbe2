"""The filtercast wire contract: generated stubs (`v1/`, `make proto`), `contract`, `manifest`."""


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml is its one source).

    Imported lazily by the packages' `__version__`: importlib.metadata costs
    ~40 ms to import, which `--help` should not pay.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("filtercast")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
