"""The ``sim`` extra: checked when :mod:`pbxsession.sim` is imported, with one clear message.

Importing this module raises an :class:`ImportError` naming
``pip install 'pbxsession[sim]'`` when hypercorn or Starlette is missing
(``trustme`` is checked only when TLS is asked for), instead of a deep
traceback from the first module that needs them.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(module: str | None) -> ImportError:
    """The ImportError to raise, from None, when ``module`` of the ``sim`` extra is missing."""
    what = f" ({module} is not installed)" if module else ""
    return ImportError(
        f"the PBX simulator needs the 'sim' extra{what}: pip install 'pbxsession[sim]'",
        name=module,
    )


def _check() -> None:
    __tracebackhide__ = True  # pytest: show the message, not this frame
    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise missing_extra(exc.name) from None


_check()
